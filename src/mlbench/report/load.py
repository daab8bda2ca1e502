"""What a report is built from: run directories, found directly or through a sweep's sweep.json,
grouped into configurations.

A *configuration* is a run's resolved config without the keys that do not change what is
measured (:data:`NOT_CONFIG`: the seed, where the data lives), its ``--network`` spec and its
injected faults (``--fault``), plus its worker count; the runs of
one configuration are its *repeats*. The grouping comes from result.json, not from names, so a
report built from a sweep and one built from the same run directories agree. A sweep point whose
run left no result.json (it failed early) still counts as a missed run of its point's
configuration; a pending point is listed, not counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbench.errors import ConfigError
from mlbench.results.summary import RESULT_FILE, load_result

SWEEP_FILE = "sweep.json"
LAUNCH_FILE = "run.json"
#: config keys that do not make a different configuration (flattened, dotted)
NOT_CONFIG = frozenset({"seed", "data.dir", "data.download"})
#: the configuration entry of a run's injected faults (``--fault``; absent without one)
FAULTS = "faults"


class ReportInputError(ConfigError):
    """The report's input is unusable: no runs, runs of different tasks, a path that is neither a
    sweep nor a run directory. One line, exit code 2, like every user mistake."""


@dataclass
class Run:
    """One run as a report sees it: result.json's numbers, or the sweep's word that it has none."""

    run_dir: Path
    run_id: str
    state: str
    result: dict[str, Any] | None
    point: str | None = None  # the sweep point, when known
    repeat: int | None = None

    @property
    def reached(self) -> bool:
        return bool(self.result and self.result.get("goal", {}).get("reached"))

    def summary_value(self, key: str) -> float | None:
        """A number from result.json's summary, only for a run that reached its target."""
        if not self.reached or self.result is None:
            return None
        value = self.result.get("summary", {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    @property
    def seed(self) -> int | None:
        return self.result.get("config", {}).get("seed") if self.result else None


@dataclass
class Configuration:
    """The repeats of one configuration (see the module docstring)."""

    key: str
    series: str  # the key without the worker count: a speedup compares within one series
    workers: int
    algorithm: str
    config: dict[str, Any]  # flattened, without NOT_CONFIG
    runs: list[Run] = field(default_factory=list)
    label: str = ""

    def values(self, key: str = "time_to_target") -> list[float | None]:
        """One entry per run that ran: its summary value, or None when it missed the target."""
        return [r.summary_value(key) for r in self.runs]


@dataclass
class Inputs:
    task: str
    runs: list[Run]
    configurations: list[Configuration]
    sweep: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path} does not hold a JSON object")
    return data


def _load_run(run_dir: Path, state: str | None = None) -> Run:
    result = None
    if (run_dir / RESULT_FILE).is_file():
        try:
            result = load_result(run_dir)
        except (OSError, ValueError) as exc:
            raise ReportInputError(f"cannot read {run_dir / RESULT_FILE}: {exc}") from None
    launch = _read_json(run_dir / LAUNCH_FILE) if (run_dir / LAUNCH_FILE).is_file() else {}
    sweep: dict[str, Any] = launch["sweep"] if isinstance(launch.get("sweep"), dict) else {}
    return Run(
        run_dir=run_dir,
        run_id=(result or {}).get("run_id") or run_dir.name,
        state=(result or {}).get("state") or state or "unknown",
        result=result,
        point=sweep.get("point"),
        repeat=sweep.get("repeat"),
    )


def _from_sweep(sweep_dir: Path) -> tuple[dict[str, Any], list[Run], list[dict[str, Any]]]:
    sweep = _read_json(sweep_dir / SWEEP_FILE)
    points = sweep.get("points")
    if sweep.get("format") != 1 or not isinstance(points, list):
        raise ReportInputError(
            f"{sweep_dir / SWEEP_FILE} is not a sweep of format 1 (no 'points' list)"
        )
    runs, pending = [], []
    for p in points:
        run_dir = Path(p["run_dir"]) if p.get("run_dir") else None
        if p.get("state") == "pending" or run_dir is None or not run_dir.is_dir():
            pending.append(p)
            continue
        run = _load_run(run_dir, p.get("state"))
        run.point = p.get("point", run.point)
        run.repeat = p.get("repeat", run.repeat)
        runs.append(run)
    return sweep, runs, pending


def load_inputs(paths: Sequence[Path | str]) -> Inputs:
    """Runs from sweep directories (holding sweep.json) and/or run directories, grouped."""
    if not paths:
        raise ReportInputError("no input: name a sweep directory or run directories")
    runs: list[Run] = []
    pending: list[dict[str, Any]] = []
    sweep: dict[str, Any] | None = None
    for raw in paths:
        path = Path(raw)
        if (path / SWEEP_FILE).is_file():
            sweep, found, waiting = _from_sweep(path)
            runs += found
            pending += waiting
        elif (path / RESULT_FILE).is_file() or (path / LAUNCH_FILE).is_file():
            runs.append(_load_run(path))
        elif not path.exists():
            raise ReportInputError(f"{path} does not exist")
        else:
            raise ReportInputError(
                f"{path} is neither a sweep directory ({SWEEP_FILE}) nor a run directory "
                f"({RESULT_FILE})"
            )
    runs = list({r.run_id: r for r in runs}.values())  # a run named twice counts once
    if not any(r.result for r in runs):
        raise ReportInputError("no finished runs to report on (no result.json in the inputs)")
    tasks = sorted({r.result["task"] for r in runs if r.result})
    if len(tasks) > 1:
        raise ReportInputError(
            f"the runs are of different tasks ({', '.join(tasks)}): one report is one task"
        )
    return Inputs(tasks[0], runs, group(runs), sweep, pending)


def _keys(result: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    cfg = {k: v for k, v in flatten(result.get("config", {})).items() if k not in NOT_CONFIG}
    if isinstance(result.get("network"), dict):  # --network: the same config on another link
        cfg["network"] = result["network"].get("spec")
    if result.get("faults"):  # --fault: the same config suffering a failure (report/failures.py)
        cfg[FAULTS] = "+".join(str(f.get("spec")) for f in result["faults"])
    series = json.dumps(cfg, sort_keys=True)
    return f"{series}|w{result.get('world_size')}", series, cfg


def group(runs: Iterable[Run]) -> list[Configuration]:
    """Runs → configurations, ordered by series, then worker count; labels name what differs."""
    configs: dict[str, Configuration] = {}
    by_point: dict[str, str] = {}
    orphans = []
    for run in runs:
        if run.result is None:
            orphans.append(run)
            continue
        key, series, cfg = _keys(run.result)
        if key not in configs:
            configs[key] = Configuration(
                key=key,
                series=series,
                workers=int(run.result.get("world_size") or 1),
                algorithm=str(run.result.get("algorithm")),
                config=cfg,
            )
        configs[key].runs.append(run)
        if run.point:
            by_point[run.point] = key
    for run in orphans:  # a sweep point's run that left no result: a missed run of its point
        if run.point in by_point:
            configs[by_point[run.point]].runs.append(run)
    out = sorted(configs.values(), key=lambda c: (c.series, c.workers))
    _label(out)
    return out


def _label(configs: list[Configuration]) -> None:
    differing = sorted(
        {k for c in configs for k in c.config if len({repr(d.config.get(k)) for d in configs}) > 1}
    )
    for c in configs:
        parts = [f"{c.workers} worker{'s' if c.workers != 1 else ''}"]
        parts += [f"{k}={_shown(c.config, k)}" for k in differing]
        c.label = " · ".join(parts)


def _shown(config: dict[str, Any], key: str) -> Any:
    """A label's value; an entry only some runs have (their faults, their network) reads
    ``none`` in the others."""
    if key in (FAULTS, "network") and key not in config:
        return "none"
    return config.get(key)


def series_label(config: Configuration, configs: Sequence[Configuration]) -> str:
    """A series (same configuration, any worker count) named by what sets it apart."""
    differing = sorted(
        {k for c in configs for k in c.config if len({repr(d.config.get(k)) for d in configs}) > 1}
    )
    return " · ".join(f"{k}={_shown(config.config, k)}" for k in differing) or config.algorithm
