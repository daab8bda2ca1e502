"""``mlbench report``: inputs → numbers (report.json) → figures (PNG, SVG) → one HTML page.

The numbers come from each run's result.json (time to target, phases, bytes) and, for the
time-to-accuracy curves, its event files; the statistics from :mod:`mlbench.results.stats`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlbench.errors import ConfigError
from mlbench.report import figures
from mlbench.report.failures import failure_costs
from mlbench.report.load import Configuration, Inputs, Run, load_inputs, series_label
from mlbench.report.prices import DEFAULT_NODE, Price, load_price
from mlbench.results import stats
from mlbench.telemetry.events import events_path, read_events

FIGURES = ("time_to_accuracy", "scaling", "phases", "bytes_to_target", "cost_to_target")


def curve(run: Run) -> list[dict[str, Any]]:
    """The goal metric at each evaluation: ``{"step", "t", "value"}``, t = wall seconds since the
    ``start`` event, the slowest rank's (evaluated metrics are global, the same on every rank)."""
    if run.result is None:
        return []
    metric = run.result.get("goal", {}).get("metric")
    times: dict[int, float] = {}
    values: dict[int, float] = {}
    for rank in range(int(run.result.get("world_size") or 1)):
        start = None
        for r in read_events(events_path(run.run_dir, rank)):
            if r["kind"] == "event" and r["name"] == "start" and start is None:
                # the first attempt's: a restarted run's clock never pauses (docs/timing.md)
                start = r["time"]
            elif r["kind"] == "val" and r["name"] == metric and r["value"] is not None:
                if start is None:
                    continue
                step = int(r["step"])
                times[step] = max(times.get(step, 0.0), r["time"] - start)
                values.setdefault(step, float(r["value"]))
    return [{"step": s, "t": times[s], "value": values[s]} for s in sorted(values)]


def _band(config: Configuration) -> list[dict[str, Any]]:
    """Median and min–max over repeats at each evaluation step (all repeats evaluate at the
    same steps; a repeat that stopped earlier simply has fewer points)."""
    import numpy as np

    by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in config.runs:
        for p in curve(run):
            by_step[p["step"]].append(p)
    out = []
    for step in sorted(by_step):
        t = np.array([p["t"] for p in by_step[step]])
        v = np.array([p["value"] for p in by_step[step]])
        out.append(
            {
                "step": step,
                "n": len(t),
                "t_median": float(np.median(t)),
                "t_min": float(t.min()),
                "t_max": float(t.max()),
                "v_median": float(np.median(v)),
                "v_min": float(v.min()),
                "v_max": float(v.max()),
            }
        )
    return out


def _phases(config: Configuration) -> dict[str, float]:
    """Median seconds per phase group (figures.PHASE_GROUPS) of the slowest rank, over the runs
    that reached the target (stopped at the goal: the phases cover the time to target)."""
    import numpy as np

    runs = [r for r in config.runs if r.reached] or [r for r in config.runs if r.result]
    out = {}
    for name, members, _ in figures.PHASE_GROUPS:
        per_run = [
            sum(
                (r.result or {}).get("summary", {}).get("phases_slowest", {}).get(m, 0.0)
                for m in members
            )
            for r in runs
        ]
        out[name] = float(np.median(per_run)) if per_run else 0.0
    return out


def _stat_row(config: Configuration, values: list[float | None]) -> dict[str, Any]:
    s = stats.summarize(values)
    return {"label": config.label, "workers": config.workers, **s.as_dict()}


def _distinct(values: list[Any]) -> str:
    seen = [str(v) for v in dict.fromkeys(values) if v not in (None, "")]
    return " / ".join(seen) if seen else "unknown"


def provenance(inputs: Inputs) -> dict[str, Any]:
    """What every figure states: task, official or not (and why), hardware, software, repeats."""
    results = [r.result for r in inputs.runs if r.result]
    env = [r.get("environment", {}) for r in results]
    differences = sorted({d for r in results for d in r.get("official_differences", [])})
    official = all(r.get("official") for r in results)
    repeats = sorted({len(c.runs) for c in inputs.configurations})
    goal = results[0].get("goal", {})
    gpu = _distinct([e.get("gpu_model") for e in env])
    out = {
        "task": inputs.task,
        "goal": goal,
        "official": official,
        "official_differences": differences,
        "hardware": f"CPU {_distinct([e.get('cpu_model') for e in env])} "
        f"({_distinct([e.get('cpu_count') for e in env])} cores), "
        f"GPU {gpu if gpu != 'unknown' else 'none'}, "
        f"hosts {_distinct([e.get('hostname') for e in env])}",
        "software": f"mlbench {_distinct([e.get('packages', {}).get('mlbench') for e in env])} "
        f"(commit {_distinct([(e.get('git_commit') or '')[:12] for e in env])}), "
        f"torch {_distinct([e.get('torch') for e in env])}, "
        f"python {_distinct([e.get('python') for e in env])}, "
        f"backend {_distinct([r.get('backend') for r in results])}",
        "repeats": "–".join(str(n) for n in (repeats[0], repeats[-1]) if n)
        if len(repeats) > 1
        else str(repeats[0]),
        "runs": len(inputs.runs),
        "configurations": len(inputs.configurations),
    }
    status = (
        "official"
        if official
        else f"not official (differs from the spec in: {', '.join(differences)})"
    )
    out["caption"] = (
        f"Task {inputs.task}, goal {goal.get('goal', '?')} ({goal.get('metric')} "
        f"{'≥' if goal.get('mode') == 'max' else '≤'} {goal.get('threshold')}), {status}. "
        f"Hardware: {out['hardware']}. Software: {out['software']}. "
        f"Repeats per configuration: {out['repeats']} ({out['runs']} runs)."
    )
    return out


def compute(inputs: Inputs, price: Price, workers_per_node: int = 1) -> dict[str, Any]:
    """Every number the report shows, JSON-ready (written as report.json)."""
    configs = inputs.configurations
    rows = []
    for c in configs:
        ttt = c.values("time_to_target")
        costs = [price.cost(t, c.workers, workers_per_node) if t is not None else None for t in ttt]
        rows.append(
            {
                "label": c.label,
                "workers": c.workers,
                "algorithm": c.algorithm,
                "runs": [
                    {
                        "run_id": r.run_id,
                        "state": r.state,
                        "seed": r.seed,
                        "reached": r.reached,
                        "time_to_target": r.summary_value("time_to_target"),
                        "run_dir": str(r.run_dir),
                    }
                    for r in c.runs
                ],
                "time_to_target": _stat_row(c, ttt),
                "wall_time_to_target": _stat_row(c, c.values("wall_time_to_target")),
                "throughput": _stat_row(c, c.values("throughput")),
                "bytes_to_target": _stat_row(c, c.values("bytes_to_target")),
                "cost_to_target": _stat_row(c, costs),
                "phases": _phases(c),
                "curve": _band(c),
            }
        )
    series: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        series[c.series].append(i)
    scaling = []
    for members in series.values():
        base = min(members, key=lambda i: configs[i].workers)
        k0 = configs[base].workers
        points = []
        for i in members:
            if i == base:  # speedup 1 by definition: no interval to propagate
                sc = stats.Scaling(k0, k0, 1.0, None, 1.0, None)
                if not any(v is not None for v in configs[base].values()):
                    sc = stats.Scaling(k0, k0, None, None, None, None)
            else:
                sc = stats.scaling(
                    configs[base].values(), configs[i].values(), k0=k0, k=configs[i].workers
                )
            d = sc.as_dict()
            points.append(
                {
                    "k": sc.k,
                    "speedup": sc.speedup,
                    "speedup_low": d["speedup_interval"]["low"] if sc.speedup_interval else None,
                    "speedup_high": d["speedup_interval"]["high"] if sc.speedup_interval else None,
                    "efficiency": sc.efficiency,
                    "efficiency_low": sc.efficiency_interval.low
                    if sc.efficiency_interval
                    else None,
                    "efficiency_high": sc.efficiency_interval.high
                    if sc.efficiency_interval
                    else None,
                    "notes": list(sc.notes),
                }
            )
            rows[i]["scaling"] = points[-1]
        scaling.append({"label": series_label(configs[base], configs), "k0": k0, "points": points})
    return {
        "format": 1,
        "task": inputs.task,
        "network": network_series(configs),
        "failures": failure_costs(configs),
        "provenance": provenance(inputs),
        "sweep_id": (inputs.sweep or {}).get("sweep_id"),
        "pending": [p.get("point") for p in inputs.pending],
        "price": {
            "node": price.node,
            "per_hour": price.per_hour,
            "currency": price.currency,
            "source": price.source,
            "date": price.date,
            "workers_per_node": workers_per_node,
        },
        "statistics": {
            "interval": f"{stats.CONFIDENCE:.0%} percentile bootstrap of the median, "
            f"{stats.N_RESAMPLES} resamples, seed {stats.SEED}; none from fewer than "
            f"{stats.MIN_INTERVAL} values",
            "olympic_mean": "MLPerf: mean without the fastest and slowest run; one missed run is "
            "the dropped slowest; undefined below 3 runs or with 2+ missed",
        },
        "configurations": rows,
        "scaling": scaling,
    }


def network_series(configs: Sequence[Configuration]) -> list[dict[str, Any]]:
    """Per scheme (and worker count), time per step at each ``--network`` bandwidth: median and
    min–max over repeats of result.json's ``summary.step_time`` (train time / steps of the
    slowest rank) and the median ``exposed_communication_per_step``, with the requested and the
    median measured bandwidth and whether any repeat was flagged (measured outside the
    tolerance). Empty when no run was shaped."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in configs:
        results = [
            r.result for r in c.runs if r.result and isinstance(r.result.get("network"), dict)
        ]
        step = [
            float(x["summary"]["step_time"])
            for x in results
            if x.get("summary", {}).get("step_time")
        ]
        if not step:
            continue
        nets = [x["network"] for x in results]
        comm = [
            float(x["summary"]["exposed_communication_per_step"])
            for x in results
            if x["summary"].get("exposed_communication_per_step") is not None
        ]
        measured = [float(n["measured"]["bandwidth_bps"]) for n in nets if n.get("measured")]
        groups[f"{c.algorithm} · {c.workers} workers"].append(
            {
                "spec": nets[0].get("spec"),
                "requested_bps": float(nets[0]["requested"]["bandwidth_bps"]),
                "measured_bps": statistics.median(measured) if measured else None,
                "flagged": any(not n.get("within_tolerance") for n in nets),
                "step_time": statistics.median(step),
                "step_time_min": min(step),
                "step_time_max": max(step),
                "n": len(step),
                "communication_per_step": statistics.median(comm) if comm else None,
            }
        )
    return [
        {"label": label, "points": sorted(pts, key=lambda p: p["requested_bps"])}
        for label, pts in sorted(groups.items())
    ]


def draw(data: dict[str, Any], out: Path) -> dict[str, dict[str, Path]]:
    """The five figures as PNG and SVG in ``out``, plus ``failure_cost`` with ``--fault`` runs
    and ``time_vs_bandwidth`` with ``--network`` runs."""
    prov = data["provenance"]
    caption = prov["caption"]
    rows = data["configurations"]
    price = data["price"]
    made = {}
    curves = [{"label": r["label"], "n": len(r["runs"]), "points": r["curve"]} for r in rows]
    made["time_to_accuracy"] = figures.save(
        figures.time_to_accuracy(curves, prov["goal"], caption), out, "time_to_accuracy"
    )
    made["scaling"] = figures.save(
        figures.scaling(
            data["scaling"],
            caption + " Error bars: 95 % bootstrap interval of the ratio of medians "
            "(none with fewer than 3 reached runs per side).",
        ),
        out,
        "scaling",
    )
    made["phases"] = figures.save(figures.phases(rows, caption), out, "phases")
    made["bytes_to_target"] = figures.save(
        figures.bars(
            [{"label": r["label"], **r["bytes_to_target"]} for r in rows],
            "Bytes communicated to target (all ranks)",
            "MB sent to target: median, error bars min–max",
            caption,
            scale=1e-6,
        ),
        out,
        "bytes_to_target",
    )
    made["cost_to_target"] = figures.save(
        figures.bars(
            [{"label": r["label"], **r["cost_to_target"]} for r in rows],
            "Cost to target",
            f"{price['currency']} to target: median, error bars min–max",
            caption
            + f" Price: {price['node']} at {price['per_hour']:g} {price['currency']}/h per node, "
            f"{price['workers_per_node']} worker(s) per node (source: {price['source']}, "
            f"{price['date']}).",
        ),
        out,
        "cost_to_target",
    )
    if data.get("failures"):
        made["failure_cost"] = figures.save(
            figures.failure_cost(data["failures"], caption), out, "failure_cost"
        )
    if data.get("network"):
        made["time_vs_bandwidth"] = figures.save(
            figures.time_vs_bandwidth(data["network"], caption), out, "time_vs_bandwidth"
        )
    return made


def build_report(
    inputs_paths: list[Path],
    out: Path,
    *,
    prices: Path | None = None,
    node_type: str = DEFAULT_NODE,
    workers_per_node: int = 1,
) -> Path:
    """Write report.html, report.json and the figures into ``out``; returns the HTML's path."""
    from mlbench.report.html import render

    inputs = load_inputs(inputs_paths)
    price = load_price(node_type, prices)
    if workers_per_node < 1:
        raise ConfigError("--workers-per-node must be at least 1")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {out}: {exc}") from None
    data = compute(inputs, price, workers_per_node)
    made = draw(data, out)
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    page = out / "report.html"
    page.write_text(render(data, made))
    return page
