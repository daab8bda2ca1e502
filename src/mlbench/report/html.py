"""The report as one self-contained HTML page: inline CSS, figures embedded as base64 SVG
``data:`` images (each in its own document, so matplotlib's element ids cannot collide), no
script, nothing fetched — it opens offline, from an e-mail attachment or a CI artifact.

Numbers are shown rounded and carry their exact value in ``data-value`` (what a test or a
scraper reads).
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:1.5rem;color:#1a1a1a}
h1{font-size:1.5rem;margin:.2rem 0}
h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:#f4f4f4}.muted{color:#666}.warn{color:#9a4d00}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#444}dl{display:grid;grid-template-columns:max-content 1fr;
gap:.2rem 1rem}dt{font-weight:600}code{background:#f4f4f4;padding:0 .2rem}
"""

TITLES = {
    "time_to_accuracy": "Time to accuracy",
    "scaling": "Speedup and parallel efficiency",
    "phases": "Phase breakdown",
    "bytes_to_target": "Bytes communicated to target",
    "cost_to_target": "Cost to target",
    "time_vs_bandwidth": "Time per step vs bandwidth (--network)",
    "failure_cost": "The cost of a failure (--fault)",
}


def fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


def num(value: float | None, digits: int = 4, suffix: str = "", col: str = "") -> str:
    """A table cell: rounded text, the exact value in ``data-value``."""
    attr = f' data-col="{col}"' if col else ""
    if value is None:
        return f'<td class="num muted"{attr}>–</td>'
    return f'<td class="num"{attr} data-value="{value!r}">{fmt(value, digits)}{escape(suffix)}</td>'


def interval(stat: dict[str, Any], scale: float = 1.0) -> str:
    iv = stat.get("interval")
    if not iv:
        return '<td class="num muted" title="fewer than 3 values">–</td>'
    return (
        f'<td class="num" data-low="{iv["low"]!r}" data-high="{iv["high"]!r}">'
        f"[{fmt(iv['low'] * scale)}, {fmt(iv['high'] * scale)}]</td>"
    )


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/svg+xml;base64,{data}">'


def _config_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>configuration</th><th>runs</th><th>missed</th><th>median (s)</th><th>mean (s)</th>"
        "<th>95 % interval of the median (s)</th><th>olympic mean (s)</th><th>min–max (s)</th>"
        "<th>speedup</th><th>efficiency</th><th>bytes to target (median)</th>"
        "<th>cost to target (median)</th></tr>"
    )
    body = []
    for r in rows:
        t = r["time_to_target"]
        sc = r.get("scaling") or {}
        sp_iv = (
            f" [{fmt(sc['speedup_low'], 3)}, {fmt(sc['speedup_high'], 3)}]"
            if sc.get("speedup_low") is not None
            else ""
        )
        body.append(
            f'<tr data-config="{escape(r["label"])}"><td>{escape(r["label"])}</td>'
            f'<td class="num">{t["n"]}</td>'
            + f'<td class="num{" warn" if t["n_missed"] else ""}" data-col="missed">'
            + f"{t['n_missed']}</td>"
            + num(t["median"], col="median")
            + num(t["mean"], col="mean")
            + interval(t)
            + num(t["olympic_mean"], col="olympic")
            + f'<td class="num">{fmt(t["min"])}–{fmt(t["max"])}</td>'
            + (
                f'<td class="num" data-col="speedup" data-value="{sc["speedup"]!r}">'
                f"{fmt(sc['speedup'], 3)}×{sp_iv}</td>"
                if sc.get("speedup") is not None
                else '<td class="num muted">–</td>'
            )
            + (
                f'<td class="num" data-col="efficiency" data-value="{sc["efficiency"]!r}">'
                f"{sc['efficiency'] * 100:.0f} %</td>"
                if sc.get("efficiency") is not None
                else '<td class="num muted">–</td>'
            )
            + num(r["bytes_to_target"]["median"], 4, " B")
            + num(r["cost_to_target"]["median"], 3)
            + "</tr>"
        )
    return f'<table data-testid="configurations">{head}{"".join(body)}</table>'


def _cost_cells(m: dict[str, Any], col: str) -> str:
    """Without, with, and their difference (the cost) with its interval, for one measure."""
    w, f = m["without"] or {}, m["with"] or {}
    iv = m.get("cost_interval")
    span = f" [{fmt(iv['low'], 3)}, {fmt(iv['high'], 3)}]" if iv else ""
    cost = (
        f'<td class="num" data-col="{col}_cost" data-value="{m["cost"]!r}">'
        f"{m['cost']:+.3g}{span}</td>"
        if m["cost"] is not None
        else f'<td class="num muted" data-col="{col}_cost">–</td>'
    )
    return (
        num(w.get("median"), col=f"{col}_without") + num(f.get("median"), col=f"{col}_with") + cost
    )


def _failures_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = (
        "<tr><th>scheme</th><th>workers</th><th>fault</th><th>checkpoint</th>"
        "<th>runs without / with (missed)</th>"
        "<th>time to target without (s)</th><th>with (s)</th><th>cost (s) [interval]</th>"
        "<th>wall to target without (s)</th><th>with (s)</th><th>cost (s) [interval]</th>"
        "<th>restart_cost_s (median, min–max)</th><th>of which lost train time (s)</th>"
        "<th>downtime (s)</th><th>resumed from step</th><th>restarts</th></tr>"
    )
    body = []
    for r in rows:
        t = r["time_to_target"]
        w, f = t["without"] or {}, t["with"] or {}
        rc = r["restart_cost_s"]
        base = (
            ""
            if r["baseline_exact"] or r["baseline"] is None
            else f' <span class="muted">(without: checkpoint {escape(r["baseline_checkpoint"])})'
            "</span>"
        )
        body.append(
            f'<tr data-failure="{escape(r["label"])}"><td>{escape(r["algorithm"])}</td>'
            f'<td class="num">{r["workers"]}</td><td><code>{escape(r["faults"])}</code></td>'
            f"<td>{escape(r['checkpoint'])}{base}</td>"
            f'<td class="num">{w.get("n", 0)} ({w.get("n_missed", 0)}) / '
            f"{f.get('n', 0)} ({f.get('n_missed', 0)})</td>"
            + _cost_cells(t, "ttt")
            + _cost_cells(r["wall_time_to_target"], "wall")
            + f'<td class="num" data-col="restart_cost" data-value="{rc["median"]!r}">'
            f"{fmt(rc['median'], 3)} ({fmt(rc['min'], 3)}–{fmt(rc['max'], 3)})</td>"
            + num(r["lost_train_time_s"]["median"], 3, col="lost_train_time")
            + num(r["downtime_s"]["median"], 3, col="downtime")
            + num(r["resumed_from_step"]["median"], 6, col="resumed_from_step")
            + num(r["restarts"]["median"], 2, col="restarts")
            + "</tr>"
        )
    return (
        '<h2>The cost of a failure</h2><table data-testid="failures">'
        f"{head}{''.join(body)}</table>"
        '<p class="muted">Each configuration with an injected fault beside the same configuration '
        "without it (or, when the inputs hold none, the one that differs only in the checkpoint "
        "interval, as noted). Cost = median with the failure − median without, over the runs "
        "that reached the target; interval: percentile bootstrap of that difference, both sides "
        "resampled (none from fewer than 3 reached runs per side). The clock never pauses: both "
        "times hold the lost work, the downtime and the restart. restart_cost_s is what the runs "
        "themselves accounted to their restarts: lost train time (after the checkpoint the restart "
        "resumed from; a failed attempt's last, unflushed log window is not counted) + downtime "
        "(from the failure to the resumed first step), slowest rank; medians over runs.</p>"
    )


def _runs_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>configuration</th><th>run</th><th>seed</th><th>state</th><th>reached</th>"
        "<th>time to target (s)</th></tr>"
    )
    body = []
    for r in rows:
        for run in r["runs"]:
            body.append(
                f"<tr><td>{escape(r['label'])}</td><td><code>{escape(run['run_id'])}</code></td>"
                f'<td class="num">{escape(str(run["seed"]))}</td><td>{escape(run["state"])}</td>'
                f"<td>{'yes' if run['reached'] else '<span class=warn>no</span>'}</td>"
                f"{num(run['time_to_target'])}</tr>"
            )
    return f'<table data-testid="runs">{head}{"".join(body)}</table>'


def render(data: dict[str, Any], made: dict[str, dict[str, Path]]) -> str:
    prov = data["provenance"]
    goal = prov["goal"]
    stats_text = data["statistics"]
    price = data["price"]
    status = (
        "official"
        if prov["official"]
        else f"not official — differs from the spec in: {', '.join(prov['official_differences'])}"
    )
    notes = sorted(
        {n for r in data["configurations"] for n in r["time_to_target"]["notes"]}
        | {n for s in data["scaling"] for p in s["points"] for n in p["notes"]}
    )
    source = ("sweep " + escape(data["sweep_id"])) if data.get("sweep_id") else "run directories"
    mode = "≥" if goal.get("mode") == "max" else "≤"
    figures_html = "".join(
        f'<figure data-figure="{name}"><h2>{TITLES[name]}</h2>'
        f"{_img(paths['svg'], TITLES[name])}"
        f"<figcaption>{escape(prov['caption'])} Files: <code>{paths['png'].name}</code>, "
        f"<code>{paths['svg'].name}</code>.</figcaption></figure>"
        for name, paths in made.items()
    )
    pending = (
        f"<p class=warn>Not yet run (pending sweep points, not counted): "
        f"{escape(', '.join(str(p) for p in data['pending']))}</p>"
        if data["pending"]
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>mlbench report · {escape(data["task"])}</title><style>{CSS}</style></head>
<body>
<h1>mlbench report · {escape(data["task"])}</h1>
<p class="muted">{source} ·
{prov["runs"]} runs in {prov["configurations"]} configurations</p>
<dl data-testid="provenance">
<dt>task</dt><dd>{escape(data["task"])}, goal {escape(str(goal.get("goal")))}:
{escape(str(goal.get("metric")))} {mode} {escape(str(goal.get("threshold")))}</dd>
<dt>status</dt><dd>{escape(status)}</dd>
<dt>hardware</dt><dd>{escape(prov["hardware"])}</dd>
<dt>software</dt><dd>{escape(prov["software"])}</dd>
<dt>repeats</dt><dd>{escape(prov["repeats"])} per configuration</dd>
<dt>price</dt><dd>{escape(price["node"])}: {price["per_hour"]:g}
{escape(price["currency"])}/h per node, {price["workers_per_node"]} worker(s) per node —
{escape(price["source"])}, {escape(price["date"])}</dd>
</dl>
<h2>Time to target</h2>
{_config_table(data["configurations"])}
{pending}
<p class="muted">Statistics over the runs that reached the target; runs that missed it are
counted in “missed”, never dropped. Interval: {escape(stats_text["interval"])}. Olympic mean:
{escape(stats_text["olympic_mean"])}. Speedup: ratio of median times to target, its interval by
bootstrapping both configurations' repeats; efficiency = speedup / (k / k0).</p>
{"".join(f'<p class="warn">{escape(n)}</p>' for n in notes)}
{_failures_table(data.get("failures") or [])}
{figures_html}
<h2>Runs</h2>
{_runs_table(data["configurations"])}
<p class="muted">Every number is also in <code>report.json</code> beside this page.</p>
</body></html>
"""
