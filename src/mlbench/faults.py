"""Injected failures (``mlbench run --fault SPEC``): the grammar, shared by the engines and ranks.

A fault turns a failure into a benchmark variable: how long does a scheme take to the target when a
rank dies at step 30 and the engine restarts the run, how much does one slow rank cost a
synchronous scheme, does the event upload survive a master outage. The grammar, one fault per
``--fault`` (repeatable)::

    kill:rank=R,step=S          rank R kills itself (SIGKILL) after its step S
    kill:rank=R,after=T         ... T after its first training step (5s, 500ms, 2m)
    hang:rank=R,step=S          rank R stops after its step S and never returns (its peers block
                                in the next collective); the hang watchdog ends the run
    slow:rank=R,factor=F        rank R is a straggler: every step's compute takes F× (F > 1)
    master-down:after=T,for=D   the run's event upload cannot reach the master for D, starting
                                T after the run started (needs --upload)

Faults act in the run's **first attempt** only: a run restarted by ``--max-restarts`` or
continued with ``--resume`` must not fail again at the same step forever. A run with any fault
is never official. docs/faults.md says what each measures.

This module sits in the bottom layer: the launch session checks and records faults, the
training side (``mlbench.train.faults``) acts on them; neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mlbench.errors import ConfigError

#: the key in ``run.json`` (and result.json) that holds a run's faults
FAULTS_KEY = "faults"
KINDS = ("kill", "hang", "slow", "master-down")
GRAMMAR = (
    "kill:rank=R,step=S | kill:rank=R,after=T | hang:rank=R,step=S | slow:rank=R,factor=F | "
    "master-down:after=T,for=D (T, D: 5s, 500ms, 2m)"
)
#: the keys each kind takes: (required sets, one of which must be given exactly; optional)
_KEYS: dict[str, tuple[tuple[frozenset[str], ...], frozenset[str]]] = {
    "kill": ((frozenset({"rank", "step"}), frozenset({"rank", "after"})), frozenset()),
    "hang": ((frozenset({"rank", "step"}),), frozenset()),
    "slow": ((frozenset({"rank", "factor"}),), frozenset()),
    "master-down": ((frozenset({"after", "for"}),), frozenset()),
}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


@dataclass(frozen=True)
class Fault:
    """One parsed fault; ``spec`` is its canonical text (what run.json and result.json show)."""

    kind: str
    rank: int | None = None
    step: int | None = None
    after: float | None = None  # seconds
    duration: float | None = None  # seconds (master-down's ``for``)
    factor: float | None = None

    @property
    def spec(self) -> str:
        parts = []
        if self.rank is not None:
            parts.append(f"rank={self.rank}")
        if self.step is not None:
            parts.append(f"step={self.step}")
        if self.factor is not None:
            parts.append(f"factor={self.factor:g}")
        if self.after is not None:
            parts.append(f"after={self.after:g}s")
        if self.duration is not None:
            parts.append(f"for={self.duration:g}s")
        return f"{self.kind}:{','.join(parts)}"

    @property
    def in_rank(self) -> bool:
        """Acted on inside a rank (everything but master-down, which the uploader suffers)."""
        return self.rank is not None

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, **{k: v for k, v in asdict(self).items() if v is not None}}


def _error(text: str, why: str) -> ConfigError:
    return ConfigError(f"--fault {text!r}: {why}; the grammar is {GRAMMAR}")


def _duration(text: str, value: str, key: str) -> float:
    m = _DURATION.match(value.strip())
    if m is None:
        raise _error(text, f"{key}={value!r} is not a duration")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _integer(text: str, value: str, key: str, least: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _error(text, f"{key}={value!r} is not an integer") from None
    if number < least:
        raise _error(text, f"{key} must be at least {least}, got {number}")
    return number


def parse_fault(text: str) -> Fault:
    """One ``--fault`` value → :class:`Fault`, or a one-line ConfigError quoting the grammar."""
    kind, sep, rest = text.strip().partition(":")
    if kind not in _KEYS:
        raise _error(text, f"unknown fault {kind!r} (one of {', '.join(KINDS)})")
    if not sep or not rest.strip():
        raise _error(text, f"{kind} needs options")
    values: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise _error(text, f"{item.strip()!r} is not KEY=VALUE")
        if key in values:
            raise _error(text, f"{key} is given twice")
        values[key] = value.strip()
    shapes, optional = _KEYS[kind]
    given = frozenset(values)
    if not any(shape <= given and given - shape <= optional for shape in shapes):
        wanted = " or ".join(",".join(sorted(s)) for s in shapes)
        raise _error(text, f"{kind} takes {wanted}, got {','.join(sorted(given))}")
    fields: dict[str, Any] = {"kind": kind}
    if "rank" in values:
        fields["rank"] = _integer(text, values["rank"], "rank", 0)
    if "step" in values:
        fields["step"] = _integer(text, values["step"], "step", 1)
    if "after" in values:
        fields["after"] = _duration(text, values["after"], "after")
    if "for" in values:
        fields["duration"] = _duration(text, values["for"], "for")
        if fields["duration"] <= 0:
            raise _error(text, "for must be longer than 0 s")
    if "factor" in values:
        try:
            factor = float(values["factor"])
        except ValueError:
            raise _error(text, f"factor={values['factor']!r} is not a number") from None
        if not 1.0 < factor <= 1000.0:
            raise _error(text, f"factor must be above 1 and at most 1000, got {factor:g}")
        fields["factor"] = factor
    return Fault(**fields)


def parse_faults(texts: list[str] | None) -> list[Fault]:
    return [parse_fault(t) for t in texts or []]


def check_faults(faults: list[Fault], world_size: int, *, upload: bool, engine: str) -> None:
    """What a parsed fault cannot mean for this run: a rank outside the world, master-down
    without an upload to cut, two faults that fight over one rank's life."""
    if faults and engine != "local":
        raise ConfigError(f"--fault is supported by the local engine only (not --engine {engine})")
    for f in faults:
        if f.rank is not None and f.rank >= world_size:
            raise ConfigError(
                f"--fault {f.spec}: rank {f.rank} does not exist in a run of {world_size} "
                f"worker(s) (ranks 0..{world_size - 1})"
            )
        if f.kind == "master-down" and not upload:
            raise ConfigError(
                f"--fault {f.spec}: there is no master to lose; master-down cuts the event "
                "upload, so it needs --upload URL"
            )
    seen: dict[tuple[str, int | None], Fault] = {}
    for f in faults:
        # one rank ends once (kill or hang), slows down once; the master goes down once
        key = ("end" if f.kind in ("kill", "hang") else f.kind, f.rank)
        if key in seen:
            raise ConfigError(f"--fault {f.spec} collides with --fault {seen[key].spec}")
        seen[key] = f


def faults_from_launch(launch: dict[str, Any]) -> list[Fault]:
    """The faults a run's ``run.json`` records (the form :meth:`Fault.to_dict` wrote)."""
    out = []
    for item in launch.get(FAULTS_KEY) or []:
        out.append(parse_fault(str(item["spec"])))
    return out
