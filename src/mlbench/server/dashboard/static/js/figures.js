// Plotly figures ({traces, layout}) built from a run's series: the run detail page draws them,
// the compare page overlays several runs with the same helpers.

import { cmp } from "./format.js";
import { stackedTraces } from "./phases.js";
import { color, layout } from "./plot.js";
import { AXES, rate } from "./series.js";

const TARGET = "#D55E00";

export const axisTitle = (axis) => (AXES.find((a) => a.id === axis) || AXES[0]).title;

function empty(text) {
  return [{ text, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: "#777" } }];
}

function crossingShapes(data, axis, metric) {
  const c = data.crossing(metric);
  if (!c) return { shapes: [], x: null, c: null };
  const x = data.xOfEvent(c, axis);
  if (x === null || x === undefined) return { shapes: [], x: null, c };
  return {
    shapes: [
      {
        type: "line",
        xref: "x",
        yref: "paper",
        x0: x,
        x1: x,
        y0: 0,
        y1: 1,
        line: { color: TARGET, width: 1.5, dash: "dot" },
      },
    ],
    x,
    c,
  };
}

/** Training loss of every rank (mean over each logging window), with the crossing marked. */
export function lossFigure(data, axis, waiting, metric) {
  const m = data.get("train", "loss");
  const traces = [];
  if (m) {
    for (const r of m.sortedRanks()) {
      traces.push({
        type: "scatter",
        mode: "lines",
        name: `rank ${r}`,
        x: data.x(m, r, axis),
        y: m.ranks.get(r).value,
        line: { color: color(r), width: 1.5 },
      });
    }
  }
  const { shapes } = crossingShapes(data, axis, metric);
  return {
    traces,
    layout: layout({
      title: { text: "Training loss", x: 0, xanchor: "left", font: { size: 14 } },
      xaxis: { title: { text: axisTitle(axis) }, gridcolor: "#eee", automargin: true, rangemode: "tozero" },
      yaxis: { title: { text: "loss" }, gridcolor: "#eee", automargin: true },
      shapes,
      annotations: traces.length ? [] : empty(waiting ? "waiting for the first events…" : "no loss events"),
    }),
  };
}

/** The goal metric (validation; every rank holds the same all-reduced value: the lowest rank
 *  is drawn), the target as a line, and the first crossing marked. */
export function metricFigure(data, goal, axis, waiting) {
  const traces = [];
  const metric = goal?.metric;
  const m = metric ? data.get("val", metric) : null;
  if (m && m.ranks.size) {
    const r = m.sortedRanks()[0];
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name: `val ${metric}`,
      x: data.x(m, r, axis),
      y: m.ranks.get(r).value,
      line: { color: color(0), width: 2 },
      marker: { size: 5 },
    });
  }
  const shapes = [];
  const annotations = [];
  if (goal && Number.isFinite(goal.threshold)) {
    shapes.push({
      type: "line",
      xref: "paper",
      x0: 0,
      x1: 1,
      yref: "y",
      y0: goal.threshold,
      y1: goal.threshold,
      line: { color: TARGET, width: 1.5, dash: "dash" },
    });
    annotations.push({
      text: `target ${cmp(goal.mode)} ${goal.threshold}`,
      xref: "paper",
      x: 0,
      xanchor: "left",
      yref: "y",
      y: goal.threshold,
      yanchor: "bottom",
      showarrow: false,
      font: { color: TARGET, size: 11 },
    });
  }
  const cross = crossingShapes(data, axis, metric);
  shapes.push(...cross.shapes);
  if (cross.x !== null && cross.c) {
    traces.push({
      type: "scatter",
      mode: "markers",
      name: "target reached",
      x: [cross.x],
      y: [cross.c.value],
      marker: { symbol: "star", size: 14, color: TARGET, line: { color: "#fff", width: 1 } },
      hovertemplate: `target reached<br>step ${cross.c.step}, epoch ${Number(cross.c.epoch).toFixed(2)}<br>${metric} %{y:.4g}<extra></extra>`,
    });
  }
  if (!traces.length) annotations.push(...empty(waiting ? "waiting for the first evaluation…" : "no evaluations"));
  // keep the target line in view even before the metric gets near it
  const ys = traces.flatMap((t) => t.y).filter(Number.isFinite);
  const range = goal && ys.length ? padRange([...ys, goal.threshold]) : undefined;
  return {
    traces,
    layout: layout({
      title: { text: metric ? `Goal metric: validation ${metric}` : "Goal metric", x: 0, xanchor: "left", font: { size: 14 } },
      xaxis: { title: { text: axisTitle(axis) }, gridcolor: "#eee", automargin: true, rangemode: "tozero" },
      yaxis: { title: { text: metric || "" }, gridcolor: "#eee", automargin: true, range },
      shapes,
      annotations,
    }),
  };
}

function padRange(values) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = (hi - lo || Math.abs(hi) || 1) * 0.08;
  return [lo - pad, hi + pad];
}

/** Stacked horizontal bars: seconds per phase group, one bar per rank. */
export function phaseFigure(byRank, split, straggler = null) {
  const ranks = Object.keys(byRank).sort((a, b) => Number(a) - Number(b));
  const labels = ranks.map((r) => (r === straggler ? `rank ${r} (straggler)` : `rank ${r}`));
  const traces = stackedTraces(labels, ranks.map((r) => byRank[r]), { split, horizontal: true });
  return {
    traces,
    layout: layout({
      barmode: "stack",
      title: { text: "Phase breakdown per rank", x: 0, xanchor: "left", font: { size: 14 } },
      xaxis: { title: { text: "seconds" }, gridcolor: "#eee", automargin: true },
      yaxis: { autorange: "reversed", automargin: true, type: "category" },
      height: Math.max(200, 110 + 34 * ranks.length),
      legend: { orientation: "h", y: -0.25, traceorder: "normal" },
      annotations: ranks.length ? [] : empty("no phase events yet"),
    }),
  };
}

// Per-worker resource samples (resource/* events), when the workers record them.
// Units and scope as docs/timing.md ("Resource samples") defines them.
export const RESOURCES = [
  { id: "cpu", title: "CPU (% of one core)", names: ["cpu_percent"] },
  { id: "memory", title: "Memory RSS (MB)", names: ["memory_rss"], scale: 1e-6 },
  { id: "network", title: "Network, host-wide (MB/s)", names: ["net_sent", "net_recv"], rate: true, scale: 1e-6 },
  { id: "threads", title: "Threads", names: ["threads"] },
  { id: "gpu", title: "GPU utilisation (%, device)", names: ["gpu_util"] },
  { id: "gpu-memory", title: "GPU memory (MB, device)", names: ["gpu_memory"], scale: 1e-6 },
];

export const hasResource = (data, def) => def.names.some((n) => data.get("resource", n)?.points);

export function resourceFigure(data, def) {
  const t0 = data.startTime() ?? 0;
  const scale = def.scale ?? 1;
  const traces = [];
  for (const [i, name] of def.names.entries()) {
    const m = data.get("resource", name);
    if (!m) continue;
    for (const r of m.sortedRanks()) {
      const s = m.ranks.get(r);
      const xy = def.rate ? rate(s.time, s.value) : { x: s.time, y: s.value };
      traces.push({
        type: "scatter",
        mode: "lines",
        name: def.names.length > 1 ? `rank ${r} ${name.replace("net_", "")}` : `rank ${r}`,
        x: xy.x.map((t) => t - t0),
        y: xy.y.map((v) => (v === null ? null : v * scale)),
        line: { color: color(r), width: 1.5, dash: i ? "dot" : "solid" },
      });
    }
  }
  return {
    traces,
    layout: layout({
      title: { text: def.title, x: 0, xanchor: "left", font: { size: 13 } },
      margin: { l: 50, r: 10, t: 32, b: 28 },
      height: 250,
      xaxis: { ticksuffix: " s" },
      yaxis: { rangemode: "tozero" },
      showlegend: traces.length > 1,
      legend: { orientation: "h", y: -0.16, yanchor: "top", font: { size: 10 } },
    }),
  };
}
