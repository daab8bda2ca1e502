// Compare: several runs' curves on a common axis, speedup and parallel efficiency against the
// worker count, and time-to-target split into phases side by side.
//
//   speedup(k)    = T(k0) / T(k)    T = median time-to-target of the repeats of one configuration
//                                   (task, algorithm, backend, goal, overrides but the seed) with
//                                   k workers; k0 = 1 when such runs are selected, else the
//                                   smallest k
//   efficiency(k) = speedup(k) / (k / k0)
// Error bars: min–max over the k-worker repeats against the baseline's median (the report's
// `mlbench report` adds bootstrap intervals; docs/reports.md).

import { getPhases, getRun, getSeries, getTasks, listRuns } from "../api.js";
import {
  DASH,
  TERMINAL,
  clear,
  cmp,
  fmtBytes,
  fmtNumber,
  fmtSeconds,
  goalOf,
  h,
  runLabel,
  stateBadge,
} from "../format.js";
import { axisTitle } from "../figures.js";
import { stackedTraces, stepTotal } from "../phases.js";
import { Chart, color, layout } from "../plot.js";
import { AXES, RunData } from "../series.js";
import { PHASES, StopReason } from "../vocab.js";

const POLL_MS = 5000;
const BASES = {
  time_to_target: "time to target (train time)",
  wall_time_to_target: "wall time to target",
};

// repeats differ only in their seed: it is not part of a configuration
const notSeed = (o) => !/^\s*seed\s*=/.test(o);
const configOverrides = (r) => (r.overrides || []).filter(notSeed);
const configKey = (r) =>
  [r.task, r.algorithm, r.backend, r.goal, JSON.stringify([...configOverrides(r)].sort())].join("|");
const configParts = (r) => [r.task, r.algorithm, r.backend, `goal ${r.goal}`, ...configOverrides(r)];
const timeOf = (r, basis) => (r.result?.goal?.reached ? (r.result.summary?.[basis] ?? null) : null);
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Per configuration: [{k, t, tmin, tmax, n, speedup, speedupLow, speedupHigh, efficiency,
 *  efficiencyLow, efficiencyHigh}] (t the median over repeats), baseline k0. */
export function scaling(runs, basis) {
  const groups = new Map();
  for (const r of runs) {
    const key = configKey(r);
    if (!groups.has(key)) groups.set(key, { runs: [] });
    groups.get(key).runs.push(r);
  }
  // legends name a configuration by what sets it apart from the others (all of it on hover)
  const all = [...groups.values()].map((g) => configParts(g.runs[0]));
  const shared = all.length > 1 ? all[0].filter((p) => all.every((ps) => ps.includes(p))) : [];
  for (const g of groups.values()) {
    const parts = configParts(g.runs[0]);
    g.full = parts.join(" · ");
    g.label = parts.filter((p) => !shared.includes(p)).join(" · ") || g.runs[0].algorithm;
    if (all.length === 1) g.label = `${g.runs[0].task} · ${g.runs[0].algorithm}`;
  }
  const out = [];
  for (const g of groups.values()) {
    const byK = new Map();
    for (const r of g.runs) {
      const t = timeOf(r, basis);
      if (t !== null && t > 0) (byK.get(r.workers) || byK.set(r.workers, []).get(r.workers)).push(t);
    }
    const ks = [...byK.keys()].sort((a, b) => a - b);
    if (!ks.length) {
      out.push({ ...g, k0: null, points: [] });
      continue;
    }
    const k0 = ks[0];
    const t0 = median(byK.get(k0));
    const points = ks.map((k) => {
      const ts = byK.get(k);
      const t = median(ts);
      const tmin = Math.min(...ts);
      const tmax = Math.max(...ts);
      const speedup = t0 / t;
      const scale = k / k0;
      // the baseline itself is 1 by definition; elsewhere the k-worker repeats' spread
      const [lo, hi] = k === k0 ? [1, 1] : [t0 / tmax, t0 / tmin];
      return { k, t, tmin, tmax, n: ts.length, speedup, speedupLow: lo, speedupHigh: hi, efficiency: speedup / scale, efficiencyLow: lo / scale, efficiencyHigh: hi / scale };
    });
    out.push({ ...g, k0, points });
  }
  return out;
}

const slowest = (ranks) =>
  Object.values(ranks).reduce((best, p) => (stepTotal(p) > stepTotal(best) ? p : best), {});

/**
 * The slowest rank's seconds per phase up to the target, and what they cover:
 *   "target"  the run stopped at its goal, so its totals are the time to target; or it went on
 *             and its phase events up to the step the goal was met were summed (exact: each
 *             logging window ends at an evaluation, and events are fetched undown-sampled)
 *   "run"     the target was not reached (or the events are too many to sum): the whole run
 */
async function phasesToTarget(r, signal) {
  const s = r.result?.summary;
  if (!s) {
    const p = await getPhases(r.id, signal).catch(() => null);
    return { phases: p ? slowest(p.ranks) : {}, covers: "run" };
  }
  if (!r.result.goal?.reached || s.stop_reason === StopReason.GOAL_REACHED) {
    return { phases: s.phases_slowest || {}, covers: r.result.goal?.reached ? "target" : "run" };
  }
  const rank = s.slowest_rank ?? 0;
  const stepAt = r.result.ranks?.find((x) => x.rank === rank)?.step_at_target;
  if (stepAt === undefined || stepAt === null) return { phases: s.phases_slowest || {}, covers: "run" };
  const LIMIT = 100_000;
  const out = {};
  try {
    for (const name of PHASES) {
      const json = await getSeries(r.id, "phase", name, LIMIT, signal, rank);
      const pts = json.ranks[String(rank)] || [];
      if (pts.length >= LIMIT) return { phases: s.phases_slowest || {}, covers: "run" };
      out[name] = pts.reduce((a, [step, , , v]) => (step <= stepAt ? a + (v || 0) : a), 0);
    }
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return { phases: s.phases_slowest || {}, covers: "run" };
  }
  return { phases: out, covers: "target" };
}

export async function mount(root, { params, signal }) {
  document.title = "Compare · mlbench";
  const state = {
    ids: (params.get("ids") || "").split(",").map((s) => s.trim()).filter(Boolean),
    axis: localStorage.getItem("mlbench.axis") || "time",
    basis: "time_to_target",
    runs: [],
    data: new Map(),
    phases: new Map(),
  };
  const tasks = await getTasks().catch(() => []);
  const charts = new Map();
  const chart = (key, el) => charts.get(key) || charts.set(key, new Chart(el)).get(key);
  let timer = null;

  // ---- layout
  const chips = h("div", { class: "chips", dataset: { testid: "compare-selected" } });
  const pickerBody = h("tbody");
  const pickerTask = h("select", { id: "pick-task", "aria-label": "task" }, h("option", { value: "" }, "any task"), tasks.map((t) => h("option", { value: t.name }, t.name)));
  const picker = h(
    "details",
    { class: "picker", open: state.ids.length < 2, dataset: { testid: "compare-picker" } },
    h("summary", {}, "Choose runs"),
    h("label", { class: "field inline" }, "Task ", pickerTask),
    h("div", { class: "table-wrap short" }, h("table", { class: "runs compact" }, h("thead", {}, h("tr", {}, ["", "Run", "Task", "Algorithm", "Workers", "State", "Time to target"].map((c) => h("th", { scope: "col" }, c)))), pickerBody)),
  );
  const summary = h("div", { class: "table-wrap", dataset: { testid: "compare-table" } });
  const axisSel = h("select", { id: "cmp-axis", dataset: { testid: "x-axis" } }, AXES.map((a) => h("option", { value: a.id, selected: a.id === state.axis }, a.label)));
  const basisSel = h("select", { id: "cmp-basis", dataset: { testid: "basis" } }, Object.entries(BASES).map(([v, t]) => h("option", { value: v }, t)));
  const el = {
    loss: h("div", { class: "chart", dataset: { testid: "chart-cmp-loss" } }),
    metric: h("div", { class: "chart", dataset: { testid: "chart-cmp-metric" } }),
    speedup: h("div", { class: "chart", dataset: { testid: "chart-speedup" } }),
    efficiency: h("div", { class: "chart", dataset: { testid: "chart-efficiency" } }),
    phases: h("div", { class: "chart", dataset: { testid: "chart-cmp-phases" } }),
    scalingNote: h("p", { class: "hint", dataset: { testid: "scaling-note" } }),
    phaseNote: h("p", { class: "hint" }),
  };
  const body = h(
    "div",
    {},
    summary,
    h("section", { "aria-labelledby": "h-cmp-curves" }, h("div", { class: "section-head" }, h("h2", { id: "h-cmp-curves" }, "Curves"), h("label", { class: "field inline", for: "cmp-axis" }, "x-axis ", axisSel)), h("div", { class: "grid-2" }, el.loss, el.metric)),
    h("section", { "aria-labelledby": "h-cmp-scaling" }, h("div", { class: "section-head" }, h("h2", { id: "h-cmp-scaling" }, "Scaling"), h("label", { class: "field inline", for: "cmp-basis" }, "time ", basisSel)), h("div", { class: "grid-2" }, el.speedup, el.efficiency), el.scalingNote),
    h("section", { "aria-labelledby": "h-cmp-phases" }, h("h2", { id: "h-cmp-phases" }, "Time to target, by phase"), el.phases, el.phaseNote),
  );
  const emptyNote = h("p", { class: "muted", dataset: { testid: "compare-empty" } }, "Select two or more runs, e.g. the same task at 1, 2 and 4 workers, or different algorithms.");
  root.append(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Compare")), chips, picker, emptyNote, body);

  // ---- selection
  function setIds(ids) {
    state.ids = ids;
    history.replaceState(null, "", `#/compare${ids.length ? `?ids=${ids.join(",")}` : ""}`);
    load();
  }

  async function renderPicker() {
    let runs = [];
    try {
      runs = (await listRuns({ task: pickerTask.value, limit: 200 }, signal)).runs;
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    clear(
      pickerBody,
      runs.map((r) =>
        h(
          "tr",
          { dataset: { runId: r.id } },
          h("td", {}, h("input", { type: "checkbox", checked: state.ids.includes(r.id), "aria-label": `compare ${r.id}`, dataset: { testid: "pick-run" }, onchange: (e) => setIds(e.target.checked ? [...state.ids, r.id] : state.ids.filter((x) => x !== r.id)) })),
          h("td", { class: "mono small" }, r.id),
          h("td", {}, r.task),
          h("td", {}, r.algorithm),
          h("td", { class: "num" }, String(r.workers)),
          h("td", {}, stateBadge(r.state)),
          h("td", { class: "num" }, fmtSeconds(timeOf(r, "time_to_target"))),
        ),
      ),
    );
  }
  pickerTask.addEventListener("change", renderPicker);

  function renderChips() {
    clear(
      chips,
      state.runs.map((r, i) =>
        h("span", { class: "chip", style: `border-color:${color(i)}` }, h("a", { href: `#/run/${r.id}` }, runLabel(r)), h("button", { type: "button", class: "link", "aria-label": `remove ${r.id}`, onclick: () => setIds(state.ids.filter((x) => x !== r.id)) }, "×")),
      ),
    );
  }

  // ---- data
  async function load() {
    clearTimeout(timer);
    const ids = [...state.ids];
    const runs = [];
    for (const id of ids) {
      try {
        runs.push(await getRun(id, signal));
      } catch (e) {
        if (e.name === "AbortError") return;
      }
    }
    if (signal.aborted || ids.join() !== state.ids.join()) return;
    state.runs = runs;
    await Promise.all(
      runs.map(async (r) => {
        const d = new RunData(r.id);
        const metric = goalOf(r, tasks.find((t) => t.name === r.task))?.metric;
        const want = [["train", "loss"], ["event", "start"], ["event", "goal_reached"], ["comm", "bytes_total"]];
        if (metric) want.push(["val", metric]);
        await Promise.all(want.map(([k, n]) => d.load(k, n, signal).catch(() => null)));
        state.data.set(r.id, d);
        state.phases.set(r.id, await phasesToTarget(r, signal));
      }),
    );
    if (signal.aborted) return;
    render();
    root.dataset.loaded = "1";
    if (runs.some((r) => !TERMINAL.has(r.state))) timer = setTimeout(load, POLL_MS);
  }


  // ---- rendering
  function render() {
    renderChips();
    const enough = state.runs.length >= 1;
    emptyNote.hidden = state.runs.length >= 2;
    body.hidden = !enough;
    if (!enough) return;
    renderSummary();
    renderCurves();
    renderScaling();
    renderPhases();
  }

  function renderSummary() {
    const sc = scaling(state.runs, state.basis);
    const sp = new Map();
    for (const g of sc) for (const r of g.runs) {
      const pt = g.points.find((p) => p.k === r.workers);
      if (pt && timeOf(r, state.basis) !== null) sp.set(r.id, pt);
    }
    const cols = ["Run", "Task", "Workers", "State", "Reached?", "Time to target", "Wall time to target", "Throughput", "Bytes to target", "Speedup", "Efficiency"];
    clear(
      summary,
      h(
        "table",
        { class: "runs" },
        h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          state.runs.map((r, i) => {
            const s = r.result?.summary || {};
            const ok = r.result?.goal?.reached;
            const pt = sp.get(r.id);
            return h(
              "tr",
              { dataset: { runId: r.id, testid: "compare-row" } },
              h("td", { class: "nowrap" }, h("span", { class: "swatch", style: `background:${color(i)}` }), h("a", { href: `#/run/${r.id}`, title: r.id }, runLabel(r))),
              h("td", { class: "nowrap" }, r.task),
              h("td", { class: "num" }, String(r.workers)),
              h("td", {}, stateBadge(r.state)),
              h("td", { class: ok ? "yes" : ok === false ? "no" : "muted" }, ok ? "yes" : ok === false ? "no" : DASH),
              h("td", { class: "num", dataset: { col: "ttt" } }, ok ? fmtSeconds(s.time_to_target) : DASH),
              h("td", { class: "num" }, ok ? fmtSeconds(s.wall_time_to_target) : DASH),
              h("td", { class: "num" }, s.throughput ? `${fmtNumber(s.throughput)} ${s.throughput_unit || "/s"}` : DASH),
              h("td", { class: "num" }, ok ? fmtBytes(s.bytes_to_target) : DASH),
              h("td", { class: "num", dataset: { col: "speedup" } }, pt ? `${pt.speedup.toFixed(2)}×` : DASH),
              h("td", { class: "num", dataset: { col: "efficiency" } }, pt ? `${(pt.efficiency * 100).toFixed(0)} %` : DASH),
            );
          }),
        ),
      ),
    );
  }

  function renderCurves() {
    const axis = state.axis;
    const lossTraces = [];
    const metricTraces = [];
    const shapes = [];
    const targets = new Map();
    state.runs.forEach((r, i) => {
      const d = state.data.get(r.id);
      if (!d) return;
      const name = runLabel(r);
      const loss = d.get("train", "loss");
      if (loss && loss.ranks.size) {
        const rk = loss.sortedRanks()[0];
        lossTraces.push({ type: "scatter", mode: "lines", name, legendgroup: r.id, x: d.x(loss, rk, axis), y: loss.ranks.get(rk).value, line: { color: color(i), width: 1.5 } });
      }
      const goal = goalOf(r, tasks.find((t) => t.name === r.task));
      if (!goal) return;
      targets.set(`${goal.metric}${goal.threshold}`, goal);
      const m = d.get("val", goal.metric);
      if (m && m.ranks.size) {
        const rk = m.sortedRanks()[0];
        metricTraces.push({ type: "scatter", mode: "lines+markers", name: `${name} (${goal.metric})`, legendgroup: r.id, x: d.x(m, rk, axis), y: m.ranks.get(rk).value, line: { color: color(i), width: 2 }, marker: { size: 4 } });
      }
      const c = d.crossing(goal.metric);
      const x = c ? d.xOfEvent(c, axis) : null;
      if (c && x !== null) {
        metricTraces.push({ type: "scatter", mode: "markers", name: `${name}: target reached`, legendgroup: r.id, showlegend: false, x: [x], y: [c.value], marker: { symbol: "star", size: 13, color: color(i), line: { color: "#000", width: 1 } }, hovertemplate: `${name}<br>target reached at step ${c.step}<extra></extra>` });
      }
    });
    const annotations = [];
    for (const g of targets.values()) {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: g.threshold, y1: g.threshold, line: { color: "#D55E00", dash: "dash", width: 1.5 } });
      annotations.push({ text: `${g.metric} ${cmp(g.mode)} ${g.threshold}`, xref: "paper", x: 0, xanchor: "left", yref: "y", y: g.threshold, yanchor: "bottom", showarrow: false, font: { color: "#D55E00", size: 11 } });
    }
    const xa = { title: { text: axisTitle(axis) }, gridcolor: "#eee", automargin: true, rangemode: "tozero" };
    chart("loss", el.loss).update(lossTraces, layout({ title: { text: "Training loss (lowest rank of each run)", x: 0, xanchor: "left", font: { size: 14 } }, xaxis: xa, yaxis: { title: { text: "loss" }, gridcolor: "#eee" } }));
    chart("metric", el.metric).update(metricTraces, layout({ title: { text: "Goal metric (validation)", x: 0, xanchor: "left", font: { size: 14 } }, xaxis: xa, yaxis: { gridcolor: "#eee" }, shapes, annotations }));
  }

  function renderScaling() {
    const sc = scaling(state.runs, state.basis).filter((g) => g.points.length >= 2);
    const sTraces = [];
    const eTraces = [];
    let kmax = 1;
    let k0min = Infinity;
    sc.forEach((g, i) => {
      const ks = g.points.map((p) => p.k);
      kmax = Math.max(kmax, ...ks);
      k0min = Math.min(k0min, g.k0);
      const hover = g.points.map((p) => `${g.full}<br>${p.k} workers: ${fmtSeconds(p.t)} (median of ${p.n}, ${fmtSeconds(p.tmin)}–${fmtSeconds(p.tmax)})`);
      const bars = (key, scale) => ({ type: "data", symmetric: false, array: g.points.map((p) => (p[`${key}High`] - p[key]) * scale), arrayminus: g.points.map((p) => (p[key] - p[`${key}Low`]) * scale), color: color(i), thickness: 1.5, width: 5 });
      sTraces.push({ type: "scatter", mode: "lines+markers", name: g.label, x: ks, y: g.points.map((p) => p.speedup), error_y: bars("speedup", 1), text: hover, hovertemplate: "%{text}<br>speedup %{y:.2f}×<extra></extra>", line: { color: color(i) } });
      eTraces.push({ type: "scatter", mode: "lines+markers", name: g.label, x: ks, y: g.points.map((p) => p.efficiency * 100), error_y: bars("efficiency", 100), text: hover, hovertemplate: "%{text}<br>efficiency %{y:.0f} %<extra></extra>", line: { color: color(i) } });
    });
    if (sc.length) {
      const k0 = k0min;
      sTraces.push({ type: "scatter", mode: "lines", name: "ideal", x: [k0, kmax], y: [1, kmax / k0], line: { color: "#999", dash: "dash" }, hoverinfo: "skip" });
      eTraces.push({ type: "scatter", mode: "lines", name: "ideal", x: [k0, kmax], y: [100, 100], line: { color: "#999", dash: "dash" }, hoverinfo: "skip" });
    }
    const none = sc.length ? [] : [{ text: "needs runs of one configuration at two or more worker counts that reached the target", xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: "#777" } }];
    const xa = { title: { text: "workers" }, dtick: 1, gridcolor: "#eee", rangemode: "tozero" };
    chart("speedup", el.speedup).update(sTraces, layout({ title: { text: "Speedup", x: 0, xanchor: "left", font: { size: 14 } }, xaxis: xa, yaxis: { title: { text: "speedup (×)" }, gridcolor: "#eee", rangemode: "tozero" }, annotations: none, legend: { orientation: "h", y: -0.3 } }));
    chart("efficiency", el.efficiency).update(eTraces, layout({ title: { text: "Parallel efficiency", x: 0, xanchor: "left", font: { size: 14 } }, xaxis: xa, yaxis: { title: { text: "efficiency (%)" }, gridcolor: "#eee", rangemode: "tozero" }, annotations: none, legend: { orientation: "h", y: -0.3 } }));
    const bases = [...new Set(sc.map((g) => g.k0))];
    el.scalingNote.textContent =
      `speedup(k) = T(${bases.length === 1 ? bases[0] : "k0"}) / T(k) on ${BASES[state.basis]}, T the median over repeats (error bars: min–max of the repeats); ` +
      `efficiency = speedup / (k / ${bases.length === 1 ? bases[0] : "k0"}). Runs that did not reach the target are left out.` +
      (bases.some((b) => b !== 1) ? " No 1-worker run was selected for some configuration: its baseline is its smallest worker count." : "");
  }

  function renderPhases() {
    const labels = [];
    const list = [];
    const ttt = [];
    let partial = false;
    for (const r of state.runs) {
      const { phases, covers } = state.phases.get(r.id) || { phases: {}, covers: "run" };
      const whole = covers !== "target";
      partial ||= whole;
      labels.push(runLabel(r) + (whole ? " *" : ""));
      list.push(phases);
      ttt.push(timeOf(r, "time_to_target"));
    }
    const traces = stackedTraces(labels, list);
    traces.push({ type: "scatter", mode: "markers", name: "time to target", x: labels, y: ttt, marker: { symbol: "diamond", size: 11, color: "#000" }, hovertemplate: "time to target %{y:.4g} s<extra>%{x}</extra>" });
    chart("phases", el.phases).update(traces, layout({ barmode: "stack", title: { text: "Slowest rank's seconds per phase, to the target", x: 0, xanchor: "left", font: { size: 14 } }, legend: { orientation: "h", y: -0.2, traceorder: "normal" }, bargap: 0.5, yaxis: { title: { text: "seconds" }, gridcolor: "#eee" }, xaxis: { type: "category", automargin: true, showgrid: false } }));
    el.phaseNote.textContent =
      "Bars: the slowest rank's seconds per phase up to the moment the target was reached (compute = forward + backward + optimizer); the train phases add up to the time to target (diamond), evaluations are on top." +
      (partial ? " * target not reached (or the run is still going): the bar covers the whole run so far." : "");
  }

  axisSel.addEventListener("change", () => {
    state.axis = axisSel.value;
    renderCurves();
  });
  basisSel.addEventListener("change", () => {
    state.basis = basisSel.value;
    renderSummary();
    renderScaling();
  });

  renderPicker();
  await load();
  return () => {
    clearTimeout(timer);
    for (const c of charts.values()) c.destroy();
  };
}
