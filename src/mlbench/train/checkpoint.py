"""Checkpoints a run can continue from exactly, and the accounting of the restarts between them.

Layout (docs/checkpoints.md)::

    RUN/checkpoints/step-<N>/rank-<r>.pt     every rank's own state at step N (torch.save)
    RUN/checkpoints/step-<N>/complete.json   written by rank 0 once every rank's file is in place
    RUN/clock.json                           the first attempt's training start (unix seconds)

Why per rank: a scheme's state is per rank (error-feedback memories, gossip models, local-SGD
replicas), and so are the loader's generators and the RNGs. Why a marker: a rank writes its file
atomically (tmp, fsync, rename, fsync of the directory), but the *set* of files is only complete
when every rank has written — rank 0 writes ``complete.json`` after a collective that every rank
enters only once its own file is durable, so a crash at any moment leaves either a complete
checkpoint or a directory the resume ignores. The last :data:`KEEP` complete ones are kept.

Everything here is plain functions over files and state dicts; the loop (``train/loop.py``)
decides when to save and restores its own attributes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlbench.attempts import Restart
from mlbench.errors import CheckpointError

CHECKPOINTS_DIR = "checkpoints"
COMPLETE_FILE = "complete.json"
CLOCK_FILE = "clock.json"
#: complete checkpoints kept (the newest; one older in case the newest proves unreadable)
KEEP = 2
#: the format of a rank file; a reader refuses another
FORMAT = 1

#: Config keys a checkpoint may differ in: they decide when the run stops, how often it logs,
#: samples resources or checkpoints, and where the data lives — never a number the training
#: computes. Everything else (seed, model, optimiser, scheme options, batch sizes, eval cadence,
#: the goal) changes the trajectory or its meaning and is refused.
IGNORED_KEYS = frozenset(
    {
        "train.max_steps",
        "train.time_limit",
        "train.log_every_steps",
        "train.log_every_seconds",
        "train.control_every_steps",
        "train.resource_every_seconds",
        "train.checkpoint_every_epochs",
        "train.checkpoint_every_steps",
        "data.dir",
        "data.download",
    }
)


# ---------------------------------------------------------------------------- files


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def step_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_dir(run_dir) / f"step-{step}"


def rank_file(run_dir: Path, step: int, rank: int) -> Path:
    return step_dir(run_dir, step) / f"rank-{rank}.pt"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that a reader sees the old file, the new one, or none —
    never a torn one, also after a power cut (the data and the rename are fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith("step-"):
        return None
    try:
        return int(name[len("step-") :])
    except ValueError:
        return None


def complete_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (with their marker), oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    steps = []
    for d in root.iterdir():
        step = _step_of(d)
        if step is not None and (d / COMPLETE_FILE).is_file():
            steps.append(step)
    return sorted(steps)


def latest_complete(run_dir: Path) -> int | None:
    steps = complete_steps(run_dir)
    return steps[-1] if steps else None


def mark_complete(run_dir: Path, step: int, meta: dict[str, Any]) -> None:
    """Rank 0, after every rank's file is durable: the checkpoint at ``step`` is usable."""
    write_json_atomic(step_dir(run_dir, step) / COMPLETE_FILE, {"step": step, **meta})


def prune(run_dir: Path, keep: int = KEEP) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and any incomplete
    directory older than the newest complete one (a crash's leftovers). Newer incomplete
    directories are left alone: they may be one being written right now."""
    steps = complete_steps(run_dir)
    if not steps:
        return
    kept = set(steps[-keep:])
    newest = steps[-1]
    for d in checkpoints_dir(run_dir).iterdir():
        step = _step_of(d)
        if step is None or step in kept or step > newest:
            continue
        shutil.rmtree(d, ignore_errors=True)


def load_rank(run_dir: Path, step: int, rank: int) -> dict[str, Any]:
    """Rank ``rank``'s state of the checkpoint at ``step``, on the CPU (each part's
    ``load_state_dict`` copies into tensors that live where the run keeps them; the task's
    carried state is moved with :func:`to_device`).

    ``weights_only``: a checkpoint is read with torch's restricted unpickler (tensors, numbers,
    strings and containers), so a run directory from elsewhere cannot run code when resumed.
    """
    path = rank_file(run_dir, step, rank)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {step_dir(run_dir, step)} has no file for rank {rank}: it was written "
            "by fewer ranks than this run has"
        ) from None
    except Exception as exc:  # a corrupt or foreign file: say which, not a pickle traceback
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mlbench checkpoint of format {FORMAT}")
    return state


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it (through dicts, lists and tuples) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted config keys whose values differ, except :data:`IGNORED_KEYS` (sorted)."""
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if k not in IGNORED_KEYS and a.get(k) != b.get(k))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


def check_compatible(
    state: dict[str, Any], *, task: str, config: dict[str, Any], world_size: int, where: Path
) -> None:
    """Refuse a checkpoint of another task, config or world size, naming what differs."""
    if state.get("task") != task:
        raise CheckpointError(
            f"checkpoint {where} is for task {state.get('task')!r}, not {task!r}; it cannot "
            "continue this run"
        )
    if state.get("world_size") != world_size:
        raise CheckpointError(
            f"checkpoint {where} was written by {state.get('world_size')} ranks, this run has "
            f"{world_size}: per-rank state (scheme memories, shards, generators) does not map"
        )
    differ = config_differences(state.get("config", {}), config)
    if differ:
        a, b = _flatten(state.get("config", {})), _flatten(config)
        shown = ", ".join(f"{k} ({a.get(k)!r} → {b.get(k)!r})" for k in differ[:5])
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        raise CheckpointError(f"checkpoint {where} was written with another config: {shown}{more}")


# ---------------------------------------------------------------------------- state of things


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every process-global random generator: torch's (and CUDA's on a GPU), numpy's, Python's.

    numpy's legacy state is kept as a tensor and numbers, so the file stays loadable with
    torch's restricted unpickler."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _generators(obj: Any) -> Iterable[tuple[str, Any]]:
    for name, value in sorted(vars(obj).items()):
        if isinstance(value, torch.Generator | np.random.Generator | random.Random):
            yield name, value


def loader_state(loader: Any) -> dict[str, Any]:
    """A loader's random state: its own ``state_dict()`` if it has one, else every generator it
    holds as an attribute (torch, numpy, Python) — the shuffle and augmentation streams. A
    loader whose order is a function of ``(seed, epoch)`` (3a, 4a, 4b) has none: ``set_epoch``
    rebuilds it."""
    own = getattr(loader, "state_dict", None)
    if callable(own):
        return {"own": own()}
    out: dict[str, Any] = {}
    for name, gen in _generators(loader):
        if isinstance(gen, torch.Generator):
            out[name] = gen.get_state()
        elif isinstance(gen, np.random.Generator):
            out[name] = json.dumps(gen.bit_generator.state)  # 128-bit integers: as text
        else:
            out[name] = json.dumps(gen.getstate())
    return out


def set_loader_state(loader: Any, state: dict[str, Any]) -> None:
    if "own" in state:
        loader.load_state_dict(state["own"])
        return
    for name, gen in _generators(loader):
        if name not in state:
            raise CheckpointError(f"the checkpoint has no state for the loader's {name!r}")
        if isinstance(gen, torch.Generator):
            gen.set_state(state[name].cpu())
        elif isinstance(gen, np.random.Generator):
            gen.bit_generator.state = json.loads(state[name])
        else:
            version, internal, gauss = json.loads(state[name])
            gen.setstate((version, tuple(internal), gauss))


_PLAIN = (int, float, str, bool, type(None))


def schedule_state(schedule: Any) -> dict[str, Any]:
    """The lr schedule's state: its ``state_dict()``, or else its plain attributes (numbers,
    strings, lists of them) — enough for a schedule whose lr is a function of the step and
    a few counters. The lr itself is in the optimizer's param groups."""
    own = getattr(schedule, "state_dict", None)
    if callable(own):
        return {"own": own()}
    return {
        "attrs": {
            k: v
            for k, v in vars(schedule).items()
            if isinstance(v, _PLAIN)
            or (isinstance(v, list) and all(isinstance(x, _PLAIN) for x in v))
        }
    }


def load_schedule_state(schedule: Any, state: dict[str, Any]) -> None:
    if "own" in state:
        schedule.load_state_dict(state["own"])
        return
    for k, v in state["attrs"].items():
        setattr(schedule, k, v)


# ---------------------------------------------------------------------------- the clock


def read_clock(run_dir: Path) -> float | None:
    """The first attempt's training start (unix seconds), or None before any attempt got there."""
    try:
        return float(json.loads((Path(run_dir) / CLOCK_FILE).read_text())["started_at"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def write_clock(run_dir: Path, started_at: float) -> None:
    write_json_atomic(Path(run_dir) / CLOCK_FILE, {"started_at": started_at})


# ---------------------------------------------------------------------------- restarts


@dataclass(frozen=True)
class RestartCost:
    """What one restart cost this rank (seconds), as ``result.json`` lists it."""

    attempt: int
    by: str
    reason: str
    resumed_from_step: int | None
    lost_steps: int
    lost_train_time_s: float
    downtime_s: float

    @property
    def cost_s(self) -> float:
        return self.lost_train_time_s + self.downtime_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "by": self.by,
            "reason": self.reason,
            "resumed_from_step": self.resumed_from_step,
            "lost_steps": self.lost_steps,
            "lost_train_time_s": self.lost_train_time_s,
            "downtime_s": self.downtime_s,
        }


#: the records a resumed attempt emits (kind ``event``, at the resumed step), in this order
RESTART_EVENTS = ("attempt", "resume", "lost_steps", "lost_train_time", "downtime", "restart_cost")


def attempt_segments(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """A rank's records by attempt: those before the first ``attempt`` marker are attempt 0's,
    those after a marker (value a) attempt a's. An attempt that died before its marker has no
    segment (it never trained)."""
    out: dict[int, list[dict[str, Any]]] = {0: []}
    current = 0
    for r in records:
        if r["kind"] == "event" and r["name"] == "attempt" and r["value"] is not None:
            current = int(r["value"])
            out[current] = []
        out[current].append(r)
    return out


def _event(segment: list[dict[str, Any]], name: str) -> float | None:
    for r in segment:
        if r["kind"] == "event" and r["name"] == name:
            return r["value"]
    return None


def recorded_restart(segment: list[dict[str, Any]], restart: Restart) -> RestartCost:
    """The cost a resumed attempt recorded for its own restart (its events)."""
    resumed = _event(segment, "resume")
    return RestartCost(
        attempt=restart.attempt,
        by=restart.by,
        reason=restart.reason,
        resumed_from_step=None if resumed is None else int(resumed),
        lost_steps=int(_event(segment, "lost_steps") or 0),
        lost_train_time_s=float(_event(segment, "lost_train_time") or 0.0),
        downtime_s=float(_event(segment, "downtime") or 0.0),
    )


def account_restarts(
    records: list[dict[str, Any]],
    restarts: list[Restart],
    *,
    resumed_from: int,
    first_step_at: float,
    rank: int = 0,
    step_time: float = 0.0,
) -> list[RestartCost]:
    """Every restart of the run as this rank saw it, the current (last) one computed now.

    The current attempt is ``len(restarts)``. Its restart cost is the work lost — the train
    time the previous attempt recorded for steps after ``resumed_from`` — plus the downtime,
    from the failure (``Restart.failed_at``) to ``first_step_at`` (this attempt's first step).
    An attempt that died before training (no ``attempt`` marker in ``records``) did no work: its
    restart costs nothing of its own, and the next restart's downtime starts at *its*
    predecessor's failure, so the clock never has a gap. Earlier restarts are read back from
    the events their attempts recorded.

    The events end at the failed attempt's last flushed log window. When the engine saw this
    rank further along (``Restart.steps_at_failure``, from its heartbeat), the steps past the
    window are lost too: they count at the logged lost steps' mean step time, else at
    ``step_time`` (the run's mean up to the checkpoint) — an estimate, the only one left.
    """
    attempt = len(restarts)
    assert attempt >= 1, "account_restarts needs at least one restart"
    segments = attempt_segments(records)
    out: list[RestartCost] = []
    for r in range(1, attempt):
        if r in segments:
            out.append(recorded_restart(segments[r], restarts[r - 1]))
        else:
            out.append(
                RestartCost(r, restarts[r - 1].by, restarts[r - 1].reason, None, 0, 0.0, 0.0)
            )
    k = attempt
    while k - 1 >= 1 and (k - 1) not in segments:
        k -= 1
    failed_at = restarts[k - 1].failed_at
    previous = segments.get(k - 1, [])
    lost_time, last_step = 0.0, resumed_from
    for rec in previous:
        if rec["kind"] == "train" and rec["name"] == "train_time" and rec["step"] > resumed_from:
            lost_time += rec["value"] or 0.0
            last_step = max(last_step, int(rec["step"]))
    logged_steps = last_step - resumed_from
    seen = restarts[k - 1].steps_at_failure.get(str(rank))
    if seen is not None and seen > last_step:
        per_step = lost_time / logged_steps if logged_steps > 0 else step_time
        lost_time += (seen - last_step) * per_step
        last_step = seen
    current = restarts[attempt - 1]
    out.append(
        RestartCost(
            attempt=attempt,
            by=current.by,
            reason=current.reason,
            resumed_from_step=resumed_from,
            lost_steps=last_step - resumed_from,
            lost_train_time_s=lost_time,
            downtime_s=max(0.0, first_step_at - failed_at),
        )
    )
    return out
