"""A task's results across mlbench versions, and whether the newest version regressed.

A **series** is the runs that measured the same thing, so only the mlbench version differs:

* the **configuration**: a hash of the closed-division config (every key not marked ``open``)
  without ``seed`` (repeats differ only by seed), plus the goal (full/light: another target,
  another time-to-target) and the worker count;
* the **environment fingerprint** (:func:`fingerprint`): the hardware and software that set the
  speed — CPU model and count, GPU model and count, torch, CUDA, NCCL, Python, backend — and not
  the hostname or the dataset path (two identical machines are the same environment).

Within a series, runs are grouped by **version**: the package version plus the git commit the run
recorded (``environment.git_commit``), ordered by the commit's time when recorded
(``environment.git_commit_time``) else by the version's first run.

**The regression rule** (in the spirit of asv): for each measure — time-to-target (lower is
better; a run that missed the target counts as infinitely slow, never dropped) and throughput
(higher is better) — take the newest version's median and the previous version's interval: a
bootstrap 95% interval of its median when it has at least :data:`BOOTSTRAP_MIN` repeats, else
the min–max of its repeats. The newest version **regressed** when its median is beyond the
interval's bad edge, **improved** when beyond the good edge, else it is the **same**. With one
repeat the interval is a point: any change is flagged, which is why repeats matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

#: repeats from which the previous version's interval is a bootstrap interval (else min–max)
BOOTSTRAP_MIN = 5
#: environment keys that set the speed (result.json ``environment``), plus the run's backend
FINGERPRINT_KEYS = ("cpu_model", "cpu_count", "gpu_model", "gpu_count", "torch", "cuda", "nccl")

Verdict = Literal["regression", "improvement", "same"]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{dotted.key: value}`` (the keys ``config.flat_items`` uses)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_hash(config: dict[str, Any], open_keys: Iterable[str]) -> str:
    """The closed-division config without the seed and the open keys, plus the goal, hashed."""
    drop = set(open_keys) | {"seed"}
    flat = {k: v for k, v in flatten(config).items() if k not in drop}
    flat["goal"] = config.get("goal", "full")
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def fingerprint(result: dict[str, Any]) -> str:
    """The environment that sets the speed, as ``key=value`` text (stable, readable)."""
    env = result.get("environment") or {}
    parts = [f"{k}={env.get(k)}" for k in FINGERPRINT_KEYS if env.get(k) is not None]
    parts.append(f"python={'.'.join(str(env.get('python', '?')).split('.')[:2])}")
    parts.append(f"backend={result.get('backend')}")
    return ", ".join(parts)


def version_of(result: dict[str, Any]) -> str:
    """``<package version>+<commit[:10]>`` (the commit with ``-dirty`` kept: uncommitted code)."""
    env = result.get("environment") or {}
    package = (env.get("packages") or {}).get("mlbench") or "?"
    commit = env.get("git_commit")
    if not commit:
        return str(package)
    dirty = "-dirty" if str(commit).endswith("-dirty") else ""
    return f"{package}+{str(commit)[:10]}{dirty}"


@dataclass
class Run:
    """One stored result and when it was made (epoch seconds; for ordering only)."""

    result: dict[str, Any]
    created: float

    @property
    def time_to_target(self) -> float:
        """The slowest rank's time-to-target; ``inf`` when the run missed the target."""
        if not (self.result.get("goal") or {}).get("reached"):
            return math.inf
        value = (self.result.get("summary") or {}).get("time_to_target")
        return math.inf if value is None else float(value)

    @property
    def throughput(self) -> float | None:
        value = (self.result.get("summary") or {}).get("throughput")
        return None if value is None else float(value)


@dataclass
class Version:
    version: str
    commit: str | None
    order: float  # commit time, else the first run's time
    runs: list[Run] = field(default_factory=list)

    def values(self, measure: str) -> list[float]:
        got = [getattr(r, measure) for r in self.runs]
        return [v for v in got if v is not None]

    def row(self) -> dict[str, Any]:
        ttt = self.values("time_to_target")
        thr = self.values("throughput")
        return {
            "version": self.version,
            "commit": self.commit,
            "repeats": len(self.runs),
            "missed": sum(1 for v in ttt if math.isinf(v)),
            "time_to_target": _stats(ttt),
            "throughput": _stats(thr),
            "run_ids": [r.result.get("run_id") for r in self.runs],
        }


@dataclass
class Series:
    task: str
    config: str
    world_size: int
    environment: str
    versions: list[Version]

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """The regression rule (module docstring) for each measure; empty with one version."""
        if len(self.versions) < 2:
            return {}
        newest, previous = self.versions[-1], self.versions[-2]
        out = {}
        for measure, better in (("time_to_target", "lower"), ("throughput", "higher")):
            now, before = newest.values(measure), previous.values(measure)
            if not now or not before:
                continue
            out[measure] = judge(now, before, better)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "config": self.config,
            "world_size": self.world_size,
            "environment": self.environment,
            "versions": [v.row() for v in self.versions],
            "verdicts": self.verdicts(),
        }


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "median": _json_num(statistics.median(values)) if values else None,
        "min": min(finite) if finite else None,
        "max": max(finite) if finite else None,
    }


def _json_num(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: a missed median is null


def interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """Min–max below :data:`BOOTSTRAP_MIN` repeats (or when a repeat missed the target: an
    infinite time has no bootstrap), else the seeded percentile-bootstrap 95% interval of the
    median that reports use (:func:`mlbench.results.stats.bootstrap_interval`): the same data
    always gives the same verdict."""
    if len(values) < BOOTSTRAP_MIN or not all(math.isfinite(v) for v in values):
        return min(values), max(values)
    from mlbench.results.stats import bootstrap_interval

    ci = bootstrap_interval(values, seed=seed)
    assert ci is not None  # BOOTSTRAP_MIN ≥ stats.MIN_INTERVAL
    return ci.low, ci.high


def judge(now: list[float], before: list[float], better: str) -> dict[str, Any]:
    """The newest version's median against the previous version's interval."""
    median = statistics.median(now)
    lo, hi = interval(before)
    if better == "lower":
        verdict: Verdict = "regression" if median > hi else "improvement" if median < lo else "same"
    else:
        verdict = "regression" if median < lo else "improvement" if median > hi else "same"
    method = "bootstrap95" if len(before) >= BOOTSTRAP_MIN else "minmax"
    return {
        "verdict": verdict,
        "median": _json_num(median),
        "previous_interval": [_json_num(lo), _json_num(hi)],
        "interval": method,
    }


def build(runs: Iterable[Run], open_keys: Iterable[str], config: str | None = None) -> list[Series]:
    """Group one task's runs into series (optionally only configuration ``config``), each with
    its versions in order. Runs that did not finish (failed, cancelled) are left out: they
    measured nothing; runs that finished and missed the target are kept (as missed)."""
    open_keys = set(open_keys)
    groups: dict[tuple[str, str, int, str], dict[str, Version]] = defaultdict(dict)
    for run in runs:
        r = run.result
        if r.get("state") != "finished":
            continue
        key = (
            r["task"],
            config_hash(r.get("config") or {}, open_keys),
            int(r.get("world_size") or 1),
            fingerprint(r),
        )
        if config is not None and key[1] != config:
            continue
        label = version_of(r)
        env = r.get("environment") or {}
        committed = _epoch(env.get("git_commit_time"))
        v = groups[key].get(label)
        if v is None:
            v = groups[key][label] = Version(label, env.get("git_commit"), math.inf)
        v.order = min(v.order, committed if committed is not None else run.created)
        v.runs.append(run)
    return [
        Series(task, cfg, ws, env, sorted(versions.values(), key=lambda v: (v.order, v.version)))
        for (task, cfg, ws, env), versions in sorted(groups.items())
    ]


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def local_runs(runs_dir: Path, task: str) -> list[Run]:
    """The task's results in a runs directory (``$MLBENCH_HOME/runs``); unreadable ones skipped."""
    from mlbench.results.summary import load_result

    out = []
    for run_dir in sorted(Path(runs_dir).glob("*/result.json")):
        try:
            result = load_result(run_dir.parent)
        except (OSError, ValueError):
            continue
        if result.get("task") != task:
            continue
        created = None
        with contextlib.suppress(OSError, ValueError):
            created = json.loads((run_dir.parent / "run.json").read_text()).get("created")
        out.append(Run(result, float(created) if created else run_dir.stat().st_mtime))
    return out


def master_runs(base: str, task: str, token: str | None = None) -> list[Run]:
    """The task's finished results stored on a master (``GET /api/runs``, every page)."""
    import httpx

    from mlbench.errors import MlbenchError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: list[Run] = []
    offset, limit = 0, 1000
    while True:
        try:
            resp = httpx.get(
                f"{base.rstrip('/')}/api/runs",
                params={"task": task, "state": "finished", "limit": limit, "offset": offset},
                headers=headers,
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise MlbenchError(f"master {base} unreachable: {exc}") from None
        if resp.status_code >= 400:
            raise MlbenchError(f"master refused: HTTP {resp.status_code} {resp.text[:300]}")
        page = resp.json()["runs"]
        for run in page:
            if run.get("result"):
                created = _epoch(run.get("created_at")) or 0.0
                out.append(Run(run["result"], created))
        if len(page) < limit:
            return out
        offset += limit
