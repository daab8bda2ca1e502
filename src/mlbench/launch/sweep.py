"""Sweeps: the plan (worker counts × schemes × swept ``--set`` values, each repeated) and the
sweep file that records it, ``SWEEPS_DIR/<sweep_id>/sweep.json`` (docs/reports.md#sweeps).

Nothing here runs anything: ``cli/sweep.py`` runs each planned run through the same
:class:`~mlbench.launch.session.LaunchSession` as ``mlbench run`` (or submits it to a master), and
this module only says *what* to run and keeps the record of what happened, so an interrupted
sweep can continue where it stopped.

``--set`` rule: ``KEY=V1,V2,...`` with two or more values is an *axis* (one point per value);
``KEY=V`` is a fixed override for every run. Commas split values except after a backslash
(``\\,`` is a literal comma) and inside brackets (``[82,109]`` is one list value), so
``--set optim.milestones=[82,109],[100,150]`` sweeps two lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlbench import limits
from mlbench.errors import ConfigError

SWEEP_FILE = "sweep.json"
FORMAT = 1
#: the states a planned run has in sweep.json; ``pending`` with a run id: started, not ended
STATES = ("pending", "finished", "failed", "cancelled")


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Axis:
    """One swept config key and its values (as the user wrote them, parsed by the config)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    """A configuration: what differs between the sweep's points (the repeat and seed do not)."""

    name: str
    workers: int
    algorithm: str
    overrides: tuple[str, ...]  # the swept ``key=value`` of this point, in axis order
    #: ``--network`` of this point (docs/network.md); None: unshaped loopback
    network: str | None = None
    #: ``--fault`` specs of this point (docs/faults.md); empty: no fault
    faults: tuple[str, ...] = ()


def split_values(text: str) -> list[str]:
    """``a,b\\,c,[1,2]`` → ``["a", "b,c", "[1,2]"]``: commas separate values except after a
    backslash or inside brackets; ``\\\\`` is a literal backslash."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    chars = iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt in (",", "\\"):
                current.append(nxt)
            else:  # a backslash before anything else is kept as written (a path, a regex)
                current.append(ch if nxt is None else ch + nxt)
        elif ch == "," and depth == 0:
            out.append("".join(current))
            current = []
        else:
            depth += {"[": 1, "]": -1}.get(ch, 0)
            current.append(ch)
    out.append("".join(current))
    return out


def parse_sets(items: Sequence[str]) -> tuple[list[str], list[Axis]]:
    """``--set`` items → (fixed overrides, axes), each key at most once.

    A fixed value keeps its escapes resolved (``a\\,b`` → ``key=a,b``, which the config then
    reads as the one value ``a,b`` — or a list, for a list field, as ``mlbench run`` would)."""
    fixed: list[str] = []
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE or KEY=V1,V2,...")
        if key in seen:
            raise ConfigError(f"--set {key} is given twice; list its values once: {key}=V1,V2")
        seen.add(key)
        values = [v.strip() for v in split_values(text)]
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
            continue
        if key == "algorithm.name":
            raise ConfigError("sweep schemes with --algorithm A B ..., not --set algorithm.name")
        if key == "task":
            raise ConfigError("a sweep runs one task; name it on the command line")
        if any(not v for v in values):
            raise ConfigError(
                f"--set {item!r} has an empty value (write null for none, \\, for a comma)"
            )
        if len(set(values)) != len(values):
            raise ConfigError(f"--set {item!r} lists a value twice")
        axes.append(Axis(key, tuple(values)))
    return fixed, axes


def _labels(axes: Sequence[Axis]) -> list[str]:
    """Each axis's short name in point names: the key's last part, or the whole key when two
    axes share that last part."""
    last = [a.key.rsplit(".", 1)[-1] for a in axes]
    return [k if last.count(k) == 1 else a.key for a, k in zip(axes, last, strict=True)]


def _label_value(value: str) -> str:
    return re.sub(r"\s+", "_", value)


def network_label(spec: str) -> str:
    """``bandwidth=100mbit,loss=0.01`` → ``net100mbit_loss0.01`` (a point name's part)."""
    text = spec.replace("bandwidth=", "").replace("=", "")
    return "net" + re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def fault_axis(groups: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """``--fault`` of a sweep → each point's faults (a list of fault sets, one per point).

    ``--fault none kill:rank=1,step=100`` (several specs after one ``--fault``) is an axis: one
    point per value, ``none`` the point without a fault, ``A+B`` two faults in one point — so one
    sweep holds the runs with and without a failure that a report pairs (the cost of a failure).
    One spec, or ``--fault A --fault B`` (one spec per flag, as ``mlbench run`` takes them), is
    fixed: every point suffers all of them."""
    if not groups:
        return [()]
    if len(groups) > 1:
        if any(len(g) != 1 for g in groups):
            raise ConfigError(
                "--fault: list a fault axis after one --fault (--fault none kill:rank=1,step=30; "
                "A+B for two faults in one point), or give one spec per --fault for every point"
            )
        values = ["+".join(g[0] for g in groups)]
    else:
        values = list(groups[0])
    out = []
    for value in values:
        specs = () if value.strip() == "none" else tuple(v.strip() for v in value.split("+"))
        if any(not v or v == "none" for v in specs):
            raise ConfigError(f"--fault {value!r}: an empty spec or `none` inside A+B")
        out.append(specs)
    if len(set(out)) != len(out):
        raise ConfigError("--fault lists a fault set twice")
    return out


def fault_label(specs: Sequence[str]) -> str:
    """``("kill:rank=1,step=30",)`` → ``kill_rank1_step30``; no fault → ``nofault``."""
    if not specs:
        return "nofault"
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "_", s.replace("=", "")).strip("_") for s in specs)


def plan(
    workers: Sequence[int],
    algorithms: Sequence[str],
    axes: Sequence[Axis],
    networks: Sequence[str | None] = (None,),
    faults: Sequence[tuple[str, ...]] = ((),),
) -> list[Point]:
    """The cross product workers × algorithms × networks × fault sets × axis values, in that
    nesting order, named ``w2-allreduce-net100mbit-kill_rank1_step30-lr0.1`` (worker count,
    scheme, the ``--network`` spec when swept, the fault set when swept, then each axis's label
    and value)."""
    if not workers:
        raise ConfigError("--workers needs at least one worker count")
    if any(k < 1 for k in workers):
        raise ConfigError(f"--workers must be at least 1, got {min(workers)}")
    if len(set(workers)) != len(workers):
        raise ConfigError("--workers lists a worker count twice")
    if not algorithms:
        raise ConfigError("--algorithm needs at least one scheme")
    if len(set(algorithms)) != len(algorithms):
        raise ConfigError("--algorithm lists a scheme twice")
    if len(set(networks)) != len(networks):
        raise ConfigError("--network lists a spec twice")
    if len(set(faults)) != len(faults):
        raise ConfigError("--fault lists a fault set twice")
    labels = _labels(axes)
    combos: list[tuple[str, ...]] = [()]
    for axis in axes:
        combos = [(*c, f"{axis.key}={v}") for c in combos for v in axis.values]
    points = []
    for k in workers:
        for algorithm in algorithms:
            for net in networks:
                for fault in faults:
                    for combo in combos:
                        parts = [f"w{k}", algorithm] + ([network_label(net)] if net else [])
                        parts += [fault_label(fault)] if len(faults) > 1 else []
                        for label, item in zip(labels, combo, strict=True):
                            parts.append(label + _label_value(item.partition("=")[2]))
                        points.append(Point("-".join(parts), k, algorithm, combo, net, fault))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two points would both be named {dup!r}; make the swept values differ")
    return points


# ---------------------------------------------------------------------------- the sweep file


def default_sweeps_dir() -> Path:
    from mlbench.runs import mlbench_home

    return mlbench_home() / "sweeps"


def new_sweep_id(task: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{task}-sweep-{secrets.token_hex(3)}"


def check_sweep_id(sweep_id: str) -> str:
    """A sweep id is a directory name and a database value: the run id's characters."""
    if len(sweep_id) > limits.RUN_ID_MAX or not re.match(limits.RUN_ID_PATTERN, sweep_id):
        raise ConfigError(
            f"invalid sweep id {sweep_id!r}: letters, digits, '.', '_', '-' "
            f"(at most {limits.RUN_ID_MAX}, not starting with a dot or dash)"
        )
    return sweep_id


def entry(point: Point, repeat: int, seed: int) -> dict[str, Any]:
    """A planned run as sweep.json lists it, not yet run."""
    network = {"network": point.network} if point.network else {}
    faults = {"faults": list(point.faults)} if point.faults else {}
    return {
        **network,
        **faults,
        "point": point.name,
        "workers": point.workers,
        "algorithm": point.algorithm,
        "overrides": list(point.overrides),
        "repeat": repeat,
        "seed": seed,
        "run_id": None,
        "run_dir": None,
        "state": "pending",
    }


def merge(planned: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan with what an earlier invocation recorded for it; refuses a different plan
    (a point, its workers, scheme, overrides or seed changed) rather than mixing two sweeps."""
    key_fields = (
        "point",
        "workers",
        "algorithm",
        "overrides",
        "repeat",
        "seed",
        "network",
        "faults",
    )
    by_key = {(e["point"], e["repeat"]): e for e in stored}
    if len(by_key) != len(stored) or len(stored) != len(planned):
        raise ConfigError(
            f"this sweep id holds {len(stored)} planned runs, this command plans {len(planned)}:"
            " a different sweep (use a new --sweep-id, or --resume with no other options)"
        )
    out = []
    for p in planned:
        old = by_key.get((p["point"], p["repeat"]))
        if old is None or any(old.get(f) != p.get(f) for f in key_fields):
            raise ConfigError(
                f"this sweep id was planned differently at point {p['point']} repeat "
                f"{p['repeat']} (use a new --sweep-id, or --resume with no other options)"
            )
        out.append(old)
    return out


def to_run(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries a (re)started sweep runs: everything not finished — pending, interrupted
    (cancelled), and failed ones, each of those once per invocation."""
    return [e for e in entries if e["state"] != "finished"]


def retry(e: dict[str, Any]) -> None:
    """Make ``e`` pending again; an earlier attempt's run id (failed, cancelled, or killed
    before it ended) moves to ``attempts`` — its run directory stays, only the sweep moves on."""
    if e.get("run_id"):
        e.setdefault("attempts", []).append(e["run_id"])
    e.update(run_id=None, run_dir=None, state="pending", reason=None)


def read(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (is {sweep_dir} a sweep directory?)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a sweep file of format {FORMAT}")
    return data


def write(sweep_dir: Path, data: dict[str, Any]) -> None:
    """Replace sweep.json atomically (a reader sees the old file or the new one, whole)."""
    path = sweep_dir / SWEEP_FILE
    tmp = path.with_name(f".{SWEEP_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def locate(ref: str, sweeps_dir: Path) -> Path:
    """``--resume ID_OR_DIR``: a directory holding sweep.json, else an id under ``sweeps_dir``."""
    path = Path(ref).expanduser()
    if (path / SWEEP_FILE).is_file():
        return path.resolve()
    candidate = sweeps_dir / check_sweep_id(ref)
    if (candidate / SWEEP_FILE).is_file():
        return candidate.resolve()
    raise ConfigError(f"no sweep {ref!r}: neither a sweep directory nor an id in {sweeps_dir}")


@contextlib.contextmanager
def locked(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep's lock: two processes running one sweep would run its points twice."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    f: IO[str] = open(sweep_dir / ".lock", "w")  # noqa: SIM115 (closed below)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"sweep {sweep_dir.name} is being run by another process") from None
        yield
    finally:
        f.close()
