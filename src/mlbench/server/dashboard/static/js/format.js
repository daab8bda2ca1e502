// DOM building (text only, never innerHTML with data) and number formatting.

import { Goal } from "./vocab.js";

/**
 * h("div", {class: "x", onclick: fn, dataset: {testid: "y"}}, child, "text", [more])
 * Attributes with value null/undefined/false are left out.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the CSP, an attribute is not
    else if (k === "value" || k === "checked" || k === "selected") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const DASH = "—";

export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return DASH;
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s - m * 60)).padStart(2, "0")} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${String(m - hr * 60).padStart(2, "0")} min`;
}

export function fmtBytes(b) {
  if (b === null || b === undefined || !Number.isFinite(b)) return DASH;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = b;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 || v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function fmtNumber(v, digits = 3) {
  if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
  if (Math.abs(v) >= 1e5) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function fmtDate(iso) {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return DASH;
  const p = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
  );
}

/** Seconds from started_at to finished_at (or now, while the run is live). */
export function runDuration(run, now = Date.now()) {
  if (!run.started_at) return null;
  const start = Date.parse(run.started_at);
  const end = run.finished_at ? Date.parse(run.finished_at) : now;
  return Math.max(0, (end - start) / 1000);
}

// terminal run states, from the master (vocab.js); re-exported for the pages that use it here
export { TERMINAL } from "./vocab.js";

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { testid: "state" } }, state);
}

/** "accuracy ≥ 80" for a run's goal (from its result, else from its task's spec). */
export function goalOf(run, task) {
  const g = run.result && run.result.goal;
  if (g && g.metric) {
    return { metric: g.metric, threshold: g.threshold, mode: g.mode, reached: g.reached };
  }
  if (!task) return null;
  const t = task.target;
  return {
    metric: t.metric,
    threshold: run.goal === Goal.LIGHT ? t.light_value : t.value,
    mode: t.mode,
    reached: null,
  };
}

export const cmp = (mode) => (mode === "min" ? "≤" : "≥");

/** Short, unique label of a run in legends: "allreduce · 2w · 4f9a1c". */
export function runLabel(run) {
  return `${run.algorithm} · ${run.workers}w · ${run.id.slice(-6)}`;
}

/** Docstring text with ``literal`` spans (reStructuredText) as <code>. */
export function rst(text) {
  return (text || "").split("``").map((part, i) => (i % 2 ? h("code", {}, part) : part));
}
