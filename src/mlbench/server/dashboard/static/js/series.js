// A run's metric series in the browser: loaded down-sampled from /series, then extended by the
// live stream, and never allowed to grow without bound (older points are thinned).

import { getSeries } from "./api.js";

export const MAX_POINTS = 2000; // per rank and series, asked of the server
const CAP = 2 * MAX_POINTS; // per rank and series, kept in the browser while following live

export const AXES = [
  { id: "time", label: "Wall time", title: "wall time since the run started (s)" },
  { id: "step", label: "Steps", title: "step" },
  { id: "epoch", label: "Epochs", title: "epoch" },
  { id: "bytes", label: "Bytes communicated", title: "bytes sent by the rank (cumulative)" },
];

class RankSeries {
  constructor() {
    this.step = [];
    this.epoch = [];
    this.time = [];
    this.value = [];
  }

  push(step, epoch, time, value) {
    this.step.push(step);
    this.epoch.push(epoch);
    this.time.push(time);
    this.value.push(value);
  }

  get length() {
    return this.time.length;
  }

  /** Halve the points, keeping the first and the last. */
  thin() {
    const keep = (_, i, a) => i % 2 === 0 || i === a.length - 1;
    this.step = this.step.filter(keep);
    this.epoch = this.epoch.filter(keep);
    this.time = this.time.filter(keep);
    this.value = this.value.filter(keep);
  }
}

export class Metric {
  constructor(kind, name) {
    this.kind = kind;
    this.name = name;
    this.ranks = new Map(); // rank (number) -> RankSeries
  }

  rank(r) {
    if (!this.ranks.has(r)) this.ranks.set(r, new RankSeries());
    return this.ranks.get(r);
  }

  /** From a /series answer (columns step, epoch, time, value). */
  static fromSeries(json) {
    const m = new Metric(json.kind, json.name);
    for (const [r, points] of Object.entries(json.ranks)) {
      const s = m.rank(Number(r));
      for (const [step, epoch, time, value] of points) s.push(step, epoch, time, value);
    }
    return m;
  }

  /** A streamed event; one already covered by the loaded series (not newer) is skipped. */
  append(rank, ev) {
    const s = this.rank(rank);
    const n = s.length;
    if (n && ev.time <= s.time[n - 1]) return false;
    s.push(ev.step, ev.epoch, ev.time, ev.value);
    if (s.length > CAP) s.thin();
    return true;
  }

  get points() {
    let n = 0;
    for (const s of this.ranks.values()) n += s.length;
    return n;
  }

  sortedRanks() {
    return [...this.ranks.keys()].sort((a, b) => a - b);
  }
}

/** All series of one run that the page has loaded or received. */
export class RunData {
  constructor(runId) {
    this.runId = runId;
    this.metrics = new Map();
  }

  get(kind, name) {
    return this.metrics.get(`${kind}/${name}`);
  }

  ensure(kind, name) {
    const key = `${kind}/${name}`;
    if (!this.metrics.has(key)) this.metrics.set(key, new Metric(kind, name));
    return this.metrics.get(key);
  }

  async load(kind, name, signal) {
    const json = await getSeries(this.runId, kind, name, MAX_POINTS, signal);
    const m = Metric.fromSeries(json);
    const old = this.metrics.get(`${kind}/${name}`);
    this.metrics.set(`${kind}/${name}`, m);
    // events streamed while the request was in flight are newer than what it returned
    if (old) for (const [r, s] of old.ranks) for (let i = 0; i < s.length; i++) {
      m.append(r, { step: s.step[i], epoch: s.epoch[i], time: s.time[i], value: s.value[i] });
    }
    return m;
  }

  /** Stream events of one rank; returns the set of "kind/name" keys that changed. */
  ingest(rank, events) {
    const touched = new Set();
    for (const ev of events) {
      if (this.ensure(ev.kind, ev.name).append(rank, ev)) touched.add(`${ev.kind}/${ev.name}`);
    }
    return touched;
  }

  /** The run's start on the wall clock: its earliest event/start, else its earliest event seen. */
  startTime() {
    const start = this.get("event", "start");
    let t0 = Infinity;
    if (start) for (const s of start.ranks.values()) if (s.length) t0 = Math.min(t0, s.time[0]);
    if (t0 < Infinity) return t0;
    for (const m of this.metrics.values()) {
      for (const s of m.ranks.values()) if (s.length) t0 = Math.min(t0, s.time[0]);
    }
    return t0 < Infinity ? t0 : null;
  }

  hasBytes() {
    const m = this.get("comm", "bytes_total");
    return Boolean(m && m.points);
  }

  /** Cumulative bytes rank `r` had sent by `step` (linear between samples, 0 at step 0). */
  bytesAt(r, step) {
    const m = this.get("comm", "bytes_total");
    const s = m && m.ranks.get(r);
    if (!s || !s.length) return null;
    const st = s.step;
    let lo = 0;
    let hi = st.length - 1;
    if (step >= st[hi]) return s.value[hi];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (st[mid] < step) lo = mid + 1;
      else hi = mid;
    }
    if (st[lo] === step) return s.value[lo];
    const [s0, v0] = lo === 0 ? [0, 0] : [st[lo - 1], s.value[lo - 1]];
    const [s1, v1] = [st[lo], s.value[lo]];
    return s1 === s0 ? v1 : v0 + ((v1 - v0) * (step - s0)) / (s1 - s0);
  }

  /** x values of rank `r` of `metric` on `axis` (one of AXES' ids). */
  x(metric, r, axis) {
    const s = metric.ranks.get(r);
    if (!s) return [];
    if (axis === "step") return s.step;
    if (axis === "epoch") return s.epoch;
    if (axis === "bytes") return s.step.map((st) => this.bytesAt(r, st));
    const t0 = this.startTime() ?? (s.length ? s.time[0] : 0);
    return s.time.map((t) => t - t0);
  }

  /** One point on `axis` for an event {rank, step, epoch, time}. */
  xOfEvent(ev, axis) {
    if (axis === "step") return ev.step;
    if (axis === "epoch") return ev.epoch;
    if (axis === "bytes") return this.bytesAt(ev.rank, ev.step);
    return ev.time - (this.startTime() ?? ev.time);
  }

  /** Where the goal was first met: the earliest event/goal_reached over ranks, or null. When
   *  `metric` is given and that evaluation's val/<metric> point of the drawn (lowest) rank is
   *  loaded, its time is used (the event is written just after it): the mark sits on the curve. */
  crossing(metric) {
    const m = this.get("event", "goal_reached");
    if (!m) return null;
    let best = null;
    for (const [r, s] of m.ranks) {
      if (s.length && (!best || s.time[0] < best.time)) {
        best = { rank: r, step: s.step[0], epoch: s.epoch[0], time: s.time[0], value: s.value[0] };
      }
    }
    const val = best && metric ? this.get("val", metric) : null;
    const v = val && val.ranks.size ? val.ranks.get(val.sortedRanks()[0]) : null;
    const i = v ? v.step.lastIndexOf(best.step) : -1;
    if (i >= 0) best = { ...best, time: v.time[i], epoch: v.epoch[i] };
    return best;
  }
}

/** Per-interval rate of a cumulative counter (e.g. resource/net_sent → bytes/s). */
export function rate(times, values) {
  const x = [];
  const y = [];
  for (let i = 1; i < times.length; i++) {
    const dt = times[i] - times[i - 1];
    if (dt > 0 && values[i] !== null && values[i - 1] !== null) {
      x.push(times[i]);
      y.push(Math.max(0, (values[i] - values[i - 1]) / dt));
    }
  }
  return { x, y };
}
