"""The report's figures, drawn with matplotlib's Agg backend (no display, same pixels everywhere).

Each figure function takes the numbers :mod:`mlbench.report.build` computed and a provenance
caption (task, official or not, hardware, software, repeats) that is drawn *into* the figure: a
PNG copied out of the report still says what it shows. Spread over repeats is always drawn: the
band or error bar is min–max over the repeats unless the caption says it is the bootstrap
interval.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe–Ito: distinguishable with the common colour-vision deficiencies
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
PHASE_GROUPS = (
    ("data", ("data",), "#56B4E9"),
    ("compute (forward + backward + optimizer)", ("forward", "backward", "optimizer"), "#009E73"),
    ("exposed communication", ("communication",), "#D55E00"),
    ("eval", ("eval",), "#999999"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "mlbench"  # stable ids: the same report, the same SVG
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, small)
    import matplotlib.pyplot as plt

    return plt


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _figure(title: str, caption: str, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    plt = _pyplot()
    lines = textwrap.wrap(caption, 150)
    height = 4.2 + 0.17 * len(lines)
    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols if ncols > 1 else 8.0, height))
    axes = list(axes) if ncols > 1 else [axes]
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    bottom = (0.35 + 0.17 * len(lines)) / height
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - 0.55 / height, bottom=bottom + 0.08)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="#444", va="bottom", ha="left")
    for ax in axes:
        ax.grid(True, color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, axes


def save(fig: Figure, out: Path, name: str) -> dict[str, Path]:
    """``name``.png and ``name``.svg in ``out``; the figure is closed."""
    plt = _pyplot()
    paths = {"png": out / f"{name}.png", "svg": out / f"{name}.svg"}
    fig.savefig(paths["png"], dpi=110, metadata={"Software": None})
    fig.savefig(paths["svg"], metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return paths


def time_to_accuracy(
    curves: Sequence[dict[str, Any]], target: dict[str, Any], caption: str
) -> Figure:
    """Goal metric vs wall time: per configuration the median over repeats at each evaluation
    (evaluations happen at the same steps in every repeat), a min–max band of the metric and
    min–max whiskers of the time."""
    fig, (ax,) = _figure("Time to accuracy", caption)
    for i, c in enumerate(curves):
        pts = c["points"]
        if not pts:
            continue
        x = [p["t_median"] for p in pts]
        y = [p["v_median"] for p in pts]
        ax.fill_between(
            x, [p["v_min"] for p in pts], [p["v_max"] for p in pts], color=color(i), alpha=0.2
        )
        ax.errorbar(
            x,
            y,
            xerr=[
                [p["t_median"] - p["t_min"] for p in pts],
                [p["t_max"] - p["t_median"] for p in pts],
            ],
            color=color(i),
            marker="o",
            markersize=4,
            capsize=3,
            label=f"{c['label']} (n={c['n']})",
        )
    if target.get("threshold") is not None:
        ax.axhline(target["threshold"], color="#D55E00", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"target {target.get('metric')} {'≥' if target.get('mode') == 'max' else '≤'} "
            f"{target['threshold']:g}",
            xy=(0, target["threshold"]),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            color="#D55E00",
            fontsize=8,
        )
    ax.set_xlabel("wall time since the first step (s, slowest rank): median, whiskers min–max")
    ax.set_ylabel(f"{target.get('metric', 'metric')} (validation): median, band min–max")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def scaling(series: Sequence[dict[str, Any]], caption: str) -> Figure:
    """Speedup and parallel efficiency vs workers, with the bootstrap interval as error bars,
    against ideal (linear) scaling."""
    from matplotlib.ticker import MaxNLocator

    fig, (sp, ef) = _figure("Speedup and parallel efficiency", caption, ncols=2)
    kmax, k0min = 1, None
    for i, s in enumerate(series):
        pts = [p for p in s["points"] if p["speedup"] is not None]
        if not pts:
            continue
        ks = [p["k"] for p in pts]
        kmax = max(kmax, *ks)
        k0min = s["k0"] if k0min is None else min(k0min, s["k0"])
        for ax, key, scale in ((sp, "speedup", 1.0), (ef, "efficiency", 100.0)):
            y = [p[key] * scale for p in pts]
            lo = [
                (p[key] - p[f"{key}_low"]) * scale if p[f"{key}_low"] is not None else 0
                for p in pts
            ]
            hi = [
                (p[f"{key}_high"] - p[key]) * scale if p[f"{key}_high"] is not None else 0
                for p in pts
            ]
            ax.errorbar(
                ks, y, yerr=[lo, hi], color=color(i), marker="o", capsize=4, label=s["label"]
            )
    if k0min is not None:
        sp.plot([k0min, kmax], [1, kmax / k0min], color="#999", linestyle="--", label="ideal")
        ef.plot([k0min, kmax], [100, 100], color="#999", linestyle="--", label="ideal")
    else:
        for ax in (sp, ef):
            ax.text(
                0.5, 0.5, "needs runs that reached the target", ha="center", transform=ax.transAxes
            )
    sp.set_ylabel("speedup T(k0) / T(k) on median time to target")
    ef.set_ylabel("parallel efficiency (%)")
    for ax in (sp, ef):
        ax.set_xlabel("workers")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    return fig


def time_vs_bandwidth(series: Sequence[dict[str, Any]], caption: str) -> Figure:
    """Seconds per training step (left) and exposed communication per step (right) vs the
    ``--network`` bandwidth, one line per scheme (log–log), median with min–max whiskers over
    repeats. A hollow ring marks a point whose measured bandwidth missed the request by more than
    the tolerance (the host could not deliver it): it is drawn at the *requested* rate and
    annotated with the measured one."""
    fig, (ax, cx) = _figure("Time per step vs bandwidth (--network, tc tbf)", caption, ncols=2)
    annotated: set[float] = set()
    for i, s in enumerate(series):
        comm = [(p["requested_bps"] / 1e6, p.get("communication_per_step")) for p in s["points"]]
        comm = [(x, y) for x, y in comm if y]
        if comm:
            cx.plot(*zip(*comm, strict=True), color=color(i), marker="o", label=s["label"])
        pts = s["points"]
        x = [p["requested_bps"] / 1e6 for p in pts]
        y = [p["step_time"] for p in pts]
        ax.errorbar(
            x,
            y,
            yerr=[
                [p["step_time"] - p["step_time_min"] for p in pts],
                [p["step_time_max"] - p["step_time"] for p in pts],
            ],
            color=color(i),
            marker="o",
            capsize=3,
            label=s["label"],
        )
        for p, xi, yi in zip(pts, x, y, strict=True):
            if not p["flagged"]:
                continue
            ax.plot([xi], [yi], marker="o", markersize=11, mfc="none", color=color(i))
            if p.get("measured_bps") and xi not in annotated:
                annotated.add(xi)
                ax.annotate(
                    f"measured ≈ {p['measured_bps'] / 1e6:.0f} Mbit/s",
                    xy=(xi, yi),
                    xytext=(-8, 10),
                    textcoords="offset points",
                    ha="right",
                    fontsize=7,
                    color="#444",
                )
    for a in (ax, cx):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("requested bandwidth per rank and direction (Mbit/s)")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    ax.set_ylabel("s per step (median, min–max); ring: off")
    cx.set_ylabel("exposed communication per step (s, median)")
    return fig


def phases(rows: Sequence[dict[str, Any]], caption: str) -> Figure:
    """Stacked median seconds per phase group of the slowest rank, one bar per configuration."""
    fig, (ax,) = _figure("Where the time goes (slowest rank, median over repeats)", caption)
    labels = [r["label"] for r in rows]
    bottom = [0.0] * len(rows)
    for name, _, col in PHASE_GROUPS:
        values = [r["phases"].get(name, 0.0) for r in rows]
        ax.bar(labels, values, bottom=bottom, color=col, label=name, width=0.55)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def bars(
    rows: Sequence[dict[str, Any]], title: str, ylabel: str, caption: str, scale: float = 1.0
) -> Figure:
    """Median per configuration with min–max error bars (bytes to target, cost to target)."""
    fig, (ax,) = _figure(title, caption)
    shown = [r for r in rows if r["median"] is not None]
    labels = [r["label"] for r in shown]
    med = [r["median"] * scale for r in shown]
    lo = [(r["median"] - r["min"]) * scale for r in shown]
    hi = [(r["max"] - r["median"]) * scale for r in shown]
    ax.bar(
        labels,
        med,
        yerr=[lo, hi],
        capsize=5,
        width=0.55,
        color=[color(i) for i in range(len(shown))],
    )
    for i, r in enumerate(shown):
        ax.annotate(
            f"n={r['n_reached']}" + (f", {r['n_missed']} missed" if r["n_missed"] else ""),
            xy=(i, 0),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="white",
        )
    if not shown:
        ax.text(0.5, 0.5, "no run reached the target", ha="center", transform=ax.transAxes)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def failure_cost(rows: Sequence[dict[str, Any]], caption: str) -> Figure:
    """The cost of a failure (:mod:`mlbench.report.failures`): per scheme × checkpoint interval,
    time to target without the failure and with it (median, min–max whiskers), train time on the
    left and wall time on the right, the difference written above each pair. On the left the
    hatched part of a with-failure bar is the runs' own ``restart_cost_s`` (median): the lost
    train time and the downtime the run accounted to its restarts."""
    import numpy as np

    fig, axes = _figure("The cost of a failure: time to target without and with it", caption, 2)
    several = {k: len({r[k] for r in rows}) > 1 for k in ("workers", "faults")}
    ticks = [
        r["checkpoint"].replace("every ", "").replace(" steps", "").replace(" step", "")
        for r in rows
    ]
    groups: list[tuple[str, list[int]]] = []  # consecutive rows of one scheme (workers, fault)
    for i, r in enumerate(rows):
        name = r["algorithm"] + (f", {r['workers']} workers" if several["workers"] else "")
        name += f"\n{r['faults']}" if several["faults"] else ""
        if groups and groups[-1][0] == name:
            groups[-1][1].append(i)
        else:
            groups.append((name, [i]))
    x = np.arange(len(rows))
    width = 0.4
    panels = (
        ("time_to_target", "train time to target (s)"),
        ("wall_time_to_target", "wall time to target (s)"),
    )
    sides = (("without", "without the failure", "#0072B2"), ("with", "with the failure", "#E69F00"))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        top = 0.0
        for j, (side, name, col) in enumerate(sides):
            values = [r[key][side] or {} for r in rows]
            med = [v.get("median") or 0.0 for v in values]
            lo = [(v["median"] - v["min"]) if v.get("median") is not None else 0 for v in values]
            hi = [(v["max"] - v["median"]) if v.get("median") is not None else 0 for v in values]
            top = max(top, *(v.get("max") or 0.0 for v in values))
            ax.bar(
                x + (j - 0.5) * width, med, width, yerr=[lo, hi], capsize=2, color=col, label=name
            )
        if key == "time_to_target":
            rc = [r["restart_cost_s"]["median"] or 0.0 for r in rows]
            ax.bar(
                x + 0.5 * width,
                rc,
                width,
                fill=False,
                hatch="///",
                edgecolor="#444",
                linewidth=0,
                label="of which restart_cost_s",
            )
        for i, r in enumerate(rows):
            cost = r[key]["cost"]
            high = max((r[key][s] or {}).get("max") or 0.0 for s in ("without", "with"))
            ax.annotate(
                "–" if cost is None else f"{cost:+.2g}",
                xy=(x[i], high),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.set_xticks(x, ticks, fontsize=7)
        for name, members in groups:  # the scheme under its checkpoint intervals
            ax.annotate(
                name,
                xy=(float(np.mean(members)), 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, -22),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=8,
            )
            if members[0]:
                ax.axvline(members[0] - 0.5, color="#bbb", linewidth=0.8)
        ax.set_ylim(0, top * 1.3 if top else 1)
        ax.set_ylabel(f"{ylabel}: median, min–max")
        ax.set_xlabel(
            "checkpoint every N steps (none: a restart starts over), per scheme; "
            "number above: the cost (s)",
            fontsize=8,
            labelpad=22,
        )
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    return fig
