// Plotly (served by this master from the plotly Python package), loaded only by pages that
// draw charts, and a small Chart wrapper that coalesces live updates.

let loading = null;

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  loading ??= new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/static/plotly.min.js";
    s.onload = () => resolve(window.Plotly);
    s.onerror = () => {
      loading = null;
      reject(new Error("could not load /static/plotly.min.js from the master"));
    };
    document.head.append(s);
  });
  return loading;
}

// Okabe–Ito: distinguishable with the common colour-vision deficiencies
export const COLORS = [
  "#0072B2",
  "#E69F00",
  "#009E73",
  "#CC79A7",
  "#56B4E9",
  "#D55E00",
  "#F0E442",
  "#000000",
];
export const color = (i) => COLORS[i % COLORS.length];

export const PHASE_COLORS = {
  data: "#56B4E9",
  compute: "#0072B2",
  forward: "#0072B2",
  backward: "#3B8FC4",
  optimizer: "#8AB9DB",
  communication: "#D55E00",
  eval: "#009E73",
  checkpoint: "#999999",
};

const AXIS = { gridcolor: "#eee", zeroline: false, automargin: true };

/** The common layout; `extra`'s xaxis/yaxis are merged into the common axis settings. */
export function layout(extra = {}) {
  return {
    margin: { l: 60, r: 16, t: 36, b: 48 },
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12 },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    legend: { orientation: "h", y: -0.22 },
    ...extra,
    xaxis: { ...AXIS, ...extra.xaxis },
    yaxis: { ...AXIS, ...extra.yaxis },
  };
}

const CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["lasso2d", "select2d"],
};

/**
 * One chart in `el`. update(traces, layout) draws at most every `interval` ms, so a live stream
 * delivering many small messages costs a few redraws per second. After drawing, the element
 * carries data-points (total points drawn) and data-ready="1" (for people and tests alike).
 */
export class Chart {
  constructor(el, { interval = 400 } = {}) {
    this.el = el;
    this.interval = interval;
    this.pending = null;
    this.timer = null;
    this.last = 0;
    this.dead = false;
  }

  update(traces, lay) {
    this.pending = { traces, lay };
    if (this.timer) return;
    const wait = Math.max(0, this.last + this.interval - performance.now());
    this.timer = setTimeout(() => this.flush(), wait);
  }

  async flush() {
    this.timer = null;
    if (this.dead || !this.pending) return;
    const { traces, lay } = this.pending;
    this.pending = null;
    this.last = performance.now();
    const Plotly = await loadPlotly();
    if (this.dead) return;
    await Plotly.react(this.el, traces, lay, CONFIG);
    const n = traces.reduce((a, t) => a + (t.x ? t.x.length : 0), 0);
    this.el.dataset.points = String(n);
    this.el.dataset.traces = String(traces.length);
    this.el.dataset.ready = "1";
  }

  destroy() {
    this.dead = true;
    clearTimeout(this.timer);
    if (window.Plotly) window.Plotly.purge(this.el);
  }
}
