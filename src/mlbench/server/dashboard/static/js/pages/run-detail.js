// Run detail: header and actions, summary, live curves (loss and goal metric against the chosen
// x-axis, target line, crossing), phase breakdown per rank, per-worker resources, per-rank logs.
//
// Data flow, so that a run with millions of events stays light:
//   stream A  /stream?kind=event&logs=true          state changes, start/goal events, all output
//   stream B  /stream?kind=train,val,comm,resource&logs=false&from_now=true   (live runs only)
//   /series?max_points=2000 for each drawn metric, loaded after B is open (B is buffered until
//   then, and events the series already holds are skipped), /phases every few seconds while live.

import {
  cancelRun,
  deleteRun,
  downloadRun,
  getMetrics,
  getPhases,
  getRun,
  getTasks,
  streamPath,
} from "../api.js";
import {
  DASH,
  TERMINAL,
  clear,
  cmp,
  fmtBytes,
  fmtDate,
  fmtNumber,
  fmtSeconds,
  goalOf,
  h,
  runDuration,
  stateBadge,
} from "../format.js";
import {
  RESOURCES,
  hasResource,
  lossFigure,
  metricFigure,
  phaseFigure,
  resourceFigure,
} from "../figures.js";
import { Chart } from "../plot.js";
import { AXES, RunData } from "../series.js";
import { openStream } from "../sse.js";
import { EventKind } from "../vocab.js";

const PHASES_MS = 3000;
const LOG_CAP = 1_000_000; // characters kept per rank and stream (the newest)
const AXIS_KEY = "mlbench.axis";

// What an incomplete upload means for this page, and how to complete it (docs/events.md).
function uploadText(up) {
  const parts = [];
  if (up.quarantined) parts.push(`${up.quarantined} refused by this master (kept in upload-quarantine.jsonl in the run directory)`);
  if (up.pending) parts.push(`${up.pending} not sent`);
  const missing = parts.length ? parts.join(", ") : "some events are missing";
  return (
    `Upload incomplete: ${missing}; ${up.stored} events are here. Charts and totals lack the rest. ` +
    `\`mlbench import RUN_DIR\` completes it once the refused lines are fixed or removed.` +
    (up.reason ? ` (${up.reason})` : "")
  );
}

export async function mount(root, { id, signal }) {
  const page = new RunDetail(root, id, signal);
  await page.start();
  return () => page.destroy();
}

class RunDetail {
  constructor(root, id, signal) {
    this.root = root;
    this.id = id;
    this.signal = signal;
    this.data = new RunData(id);
    this.streams = [];
    this.charts = new Map();
    this.logs = new Map();
    this.logSel = { rank: 0, stream: "stdout" };
    this.axis = localStorage.getItem(AXIS_KEY) || "time";
    this.split = false;
    this.loaded = false;
    this.buffer = [];
    this.liveEvents = 0;
    this.phaseTimer = null;
    this.tick = null;
  }

  async start() {
    document.title = `${this.id} · mlbench`;
    try {
      this.run = await getRun(this.id, this.signal);
    } catch (e) {
      if (e.status === 404) {
        this.root.append(
          h("h1", {}, "Run not found"),
          h("p", { dataset: { testid: "not-found" } }, `There is no run ${this.id} on this master. `, h("a", { href: "#/runs" }, "All runs")),
        );
        return;
      }
      throw e;
    }
    const tasks = await getTasks().catch(() => []);
    this.task = tasks.find((t) => t.name === this.run.task) || null;
    this.build();
    this.renderRun();
    this.renderLog();
    this.wasLive = !TERMINAL.has(this.run.state);
    this.openStreams();
    await this.loadSeries();
    this.loaded = true;
    for (const msg of this.buffer.splice(0)) this.ingestLive(msg);
    this.renderCurves();
    this.renderResources();
    this.renderCards();
    await this.refreshPhases();
    if (this.wasLive) this.schedulePhases();
    this.tick = setInterval(() => this.renderDuration(), 1000);
    this.root.dataset.loaded = "1";
  }

  destroy() {
    for (const s of this.streams) s.close();
    clearTimeout(this.phaseTimer);
    clearInterval(this.tick);
    for (const c of this.charts.values()) c.destroy();
  }

  chart(key, el) {
    if (!this.charts.has(key)) this.charts.set(key, new Chart(el));
    return this.charts.get(key);
  }

  // ------------------------------------------------------------------------------ layout

  build() {
    const r = this.run;
    this.el = {
      state: h("span"),
      meta: h("p", { class: "meta", dataset: { testid: "run-meta" } }),
      reason: h("p", { class: "reason", role: "note", dataset: { testid: "run-reason" }, hidden: true }),
      upload: h("p", { class: "reason", role: "note", dataset: { testid: "run-upload" }, hidden: true }),
      live: h("span", { class: "live", dataset: { testid: "live-status" } }),
      actionMsg: h("p", { class: "field-error", role: "alert", dataset: { testid: "action-error" } }),
      cards: h("div", { class: "cards", dataset: { testid: "summary" } }),
      loss: h("div", { class: "chart", dataset: { testid: "chart-loss" } }),
      metric: h("div", { class: "chart", dataset: { testid: "chart-metric" } }),
      phases: h("div", { class: "chart bars", dataset: { testid: "chart-phases" } }),
      phaseNote: h("p", { class: "hint" }),
      straggler: h("p", { class: "reason", role: "note", dataset: { testid: "stragglers" }, hidden: true }),
      resources: h("div", { class: "grid-res", dataset: { testid: "resources" } }),
      resourcesEmpty: h(
        "p",
        { class: "muted", dataset: { testid: "resources-empty" } },
        "No resource samples for this run (workers record CPU, memory, network and GPU as resource/* events).",
      ),
      logPre: h("pre", { class: "log", tabindex: "0", "aria-label": "output", dataset: { testid: "log" } }),
      logNote: h("p", { class: "hint", dataset: { testid: "log-note" } }),
    };
    this.btn = {
      cancel: h("button", { type: "button", class: "danger", dataset: { testid: "btn-cancel" }, onclick: () => this.cancel() }, "Cancel"),
      del: h("button", { type: "button", class: "danger ghost", dataset: { testid: "btn-delete" }, onclick: () => this.del() }, "Delete"),
      download: h("button", { type: "button", class: "ghost", dataset: { testid: "btn-download" }, onclick: () => this.download() }, "Download"),
    };
    const axisSel = h(
      "select",
      { id: "x-axis", dataset: { testid: "x-axis" } },
      AXES.map((a) => h("option", { value: a.id, selected: a.id === this.axis }, a.label)),
    );
    axisSel.addEventListener("change", () => {
      this.axis = axisSel.value;
      localStorage.setItem(AXIS_KEY, this.axis);
      this.renderCurves();
    });
    this.axisSel = axisSel;
    const split = h("input", { type: "checkbox", id: "split-compute", dataset: { testid: "split-compute" } });
    split.addEventListener("change", () => {
      this.split = split.checked;
      this.renderPhases();
    });
    const rankSel = h(
      "select",
      { id: "log-rank", dataset: { testid: "log-rank" } },
      Array.from({ length: r.workers }, (_, i) => h("option", { value: i }, `rank ${i}`)),
    );
    rankSel.addEventListener("change", () => {
      this.logSel.rank = Number(rankSel.value);
      this.renderLog();
    });
    this.streamBtns = ["stdout", "stderr"].map((s) =>
      h(
        "button",
        {
          type: "button",
          class: "tab",
          "aria-pressed": String(s === this.logSel.stream),
          dataset: { testid: `log-${s}`, stream: s },
          onclick: () => {
            this.logSel.stream = s;
            this.renderLog();
          },
        },
        s,
      ),
    );
    this.follow = h("input", { type: "checkbox", id: "log-follow", checked: true });

    this.root.append(
      h(
        "div",
        { class: "page-head" },
        h("h1", { tabindex: "-1", class: "mono run-title", dataset: { testid: "run-title" } }, r.id),
        this.el.state,
        this.el.live,
        h("div", { class: "spacer" }),
        this.btn.cancel,
        this.btn.del,
        this.btn.download,
      ),
      this.el.meta,
      this.el.reason,
      this.el.upload,
      this.el.actionMsg,
      this.el.cards,
      h(
        "section",
        { "aria-labelledby": "h-curves" },
        h(
          "div",
          { class: "section-head" },
          h("h2", { id: "h-curves" }, "Curves"),
          h("label", { class: "field inline", for: "x-axis" }, "x-axis ", axisSel),
        ),
        h("div", { class: "grid-2" }, this.el.loss, this.el.metric),
      ),
      h(
        "section",
        { "aria-labelledby": "h-phases" },
        h(
          "div",
          { class: "section-head" },
          h("h2", { id: "h-phases" }, "Where the time went"),
          h("label", { class: "inline", for: "split-compute" }, split, " split compute into forward / backward / optimizer"),
        ),
        this.el.straggler,
        this.el.phases,
        this.el.phaseNote,
      ),
      h(
        "section",
        { "aria-labelledby": "h-resources" },
        h(
          "div",
          { class: "section-head" },
          h("h2", { id: "h-resources" }, "Workers"),
          h("span", { class: "hint" }, "per rank, against seconds since the run started (before 0: start-up and data loading)"),
        ),
        this.el.resourcesEmpty,
        this.el.resources,
      ),
      h(
        "section",
        { "aria-labelledby": "h-logs" },
        h(
          "div",
          { class: "section-head" },
          h("h2", { id: "h-logs" }, "Output"),
          h("label", { class: "field inline", for: "log-rank" }, "Rank ", rankSel),
          h("div", { class: "tabs", role: "group", "aria-label": "stream" }, this.streamBtns),
          h("label", { class: "inline", for: "log-follow" }, this.follow, " follow"),
        ),
        this.el.logPre,
        this.el.logNote,
      ),
    );
  }

  // ------------------------------------------------------------------------- header, cards

  renderRun() {
    const r = this.run;
    this.goal = goalOf(r, this.task);
    clear(this.el.state, stateBadge(r.state));
    const overrides = (r.overrides || []).join(" ");
    clear(
      this.el.meta,
      h("a", { href: `#/tasks?task=${r.task}` }, r.task),
      ` · ${r.algorithm} · ${r.workers} worker${r.workers === 1 ? "" : "s"} · ${r.backend} · goal ${r.goal}`,
      this.goal ? ` (${this.goal.metric} ${cmp(this.goal.mode)} ${this.goal.threshold})` : "",
      ` · ${r.official === null ? "" : r.official ? "official" : "unofficial"}`,
      overrides ? h("span", { class: "mono small" }, ` · ${overrides}`) : null,
      h("br"),
      h("span", { class: "muted small" }, `created ${fmtDate(r.created_at)} · started ${fmtDate(r.started_at)} · finished ${fmtDate(r.finished_at)}`),
    );
    this.el.reason.hidden = !r.reason;
    this.el.reason.textContent = r.reason ? `Reason: ${r.reason}` : "";
    // the run's events did not all reach this master: its charts and totals are missing some
    const up = r.upload;
    this.el.upload.hidden = !up || up.complete;
    this.el.upload.textContent = this.el.upload.hidden ? "" : uploadText(up);
    const terminal = TERMINAL.has(r.state);
    this.btn.cancel.hidden = terminal;
    this.btn.del.hidden = !terminal;
    this.renderCards();
  }

  renderCards() {
    const r = this.run;
    const s = r.result?.summary || {};
    const g = this.goal;
    // before the result exists, a goal_reached event already says it was met
    const crossed = g?.reached == null && this.loaded ? this.data.crossing(g?.metric) : null;
    const reached = crossed ? true : g?.reached;
    const card = (id, label, value, sub) =>
      h("div", { class: "card", dataset: { testid: `card-${id}` } }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), sub ? h("div", { class: "sub" }, sub) : null);
    const metric = g?.metric;
    const finalMetric = s.final_metrics && metric ? s.final_metrics[metric] : null;
    clear(
      this.el.cards,
      card(
        "reached",
        "Goal reached?",
        h("span", { class: reached ? "yes" : reached === false ? "no" : "muted" }, reached ? "yes" : reached === false ? "no" : TERMINAL.has(r.state) ? DASH : "not yet"),
        crossed ? `at step ${crossed.step} (${metric} ${cmp(g.mode)} ${g.threshold})` : g ? `${metric} ${cmp(g.mode)} ${g.threshold} (${r.goal})` : null,
      ),
      card("ttt", "Time to target", reached ? fmtSeconds(s.time_to_target) : DASH, crossed ? "once the run ends" : "train time, slowest rank"),
      card("wttt", "Wall time to target", reached ? fmtSeconds(s.wall_time_to_target) : DASH, "incl. evaluations"),
      card("train-time", "Train time", fmtSeconds(s.train_time), `wall ${fmtSeconds(s.wall_time)}`),
      card("throughput", "Throughput", s.throughput ? `${fmtNumber(s.throughput)} ${s.throughput_unit || "/s"}` : DASH, `${s.unit || "samples"}, all ranks`),
      card("bytes", "Bytes sent", fmtBytes(s.bytes_sent), s.bytes_to_target ? `${fmtBytes(s.bytes_to_target)} to target` : "all ranks"),
      card("final", metric ? `Final ${metric}` : "Final metric", fmtNumber(finalMetric, 4), s.stop_reason ? `stopped: ${s.stop_reason}` : null),
      card("duration", "Duration", h("span", { dataset: { testid: "duration" } }, fmtSeconds(runDuration(r))), s.steps ? `${s.steps} steps · ${fmtNumber(s.epochs)} epoch${s.epochs === 1 ? "" : "s"}` : null),
    );
  }

  renderDuration() {
    const el = this.el.cards.querySelector('[data-testid="duration"]');
    if (el) el.textContent = fmtSeconds(runDuration(this.run));
  }

  setLive(status, err) {
    const text = {
      open: "● live",
      reconnecting: "reconnecting…",
      ended: "",
      error: `stream error: ${err?.message || ""}`,
    }[status];
    this.el.live.textContent = text ?? "";
    this.el.live.dataset.status = status;
  }

  // ------------------------------------------------------------------------------ streams

  openStreams() {
    this.streams.push(
      openStream(streamPath(this.id, { kind: "event", logs: "true" }), {
        onMessage: (event, data) => this.onMain(event, data),
        onStatus: (status, err) => {
          if (status === "error") this.setLive(status, err);
          else if (!TERMINAL.has(this.run.state) || status === "ended") this.setLive(status);
        },
      }),
    );
    if (!this.wasLive) return;
    this.live = openStream(
      streamPath(this.id, { kind: [EventKind.TRAIN, EventKind.VAL, EventKind.COMM, EventKind.RESOURCE], logs: "false", from_now: "true" }),
      {
        onMessage: (event, data) => {
          if (event !== "events") return;
          if (this.loaded) this.ingestLive(data);
          else this.buffer.push(data);
        },
      },
    );
    this.streams.push(this.live);
  }

  onMain(event, data) {
    if (event === "state") {
      const was = this.run.state;
      this.run = data;
      this.renderRun();
      if (was !== data.state && TERMINAL.has(data.state)) clearTimeout(this.phaseTimer);
    } else if (event === "events") {
      const touched = this.data.ingest(data.rank, data.events);
      if (this.loaded && touched.size) {
        this.renderCurves();
        if (touched.has("event/goal_reached")) this.renderCards();
        if (touched.has("event/start")) this.renderResources();
      }
    } else if (event === "log") {
      this.appendLog(data);
    } else if (event === "end") {
      this.onEnd(data);
    }
  }

  ingestLive({ rank, events }) {
    const touched = this.data.ingest(rank, events);
    this.liveEvents += events.length;
    this.root.dataset.liveEvents = String(this.liveEvents);
    const metric = this.goal?.metric;
    if (touched.has("train/loss") || touched.has(`val/${metric}`) || touched.has("comm/bytes_total")) {
      this.renderCurves();
    }
    if ([...touched].some((k) => k.startsWith("resource/"))) this.renderResources();
  }

  async onEnd(data) {
    this.live?.close();
    clearTimeout(this.phaseTimer);
    if (data.state === "deleted") {
      this.el.actionMsg.textContent = "This run was deleted.";
      return;
    }
    if (!this.wasLive) return;
    // the run just ended while we watched: show exactly what a fresh load would
    try {
      this.run = await getRun(this.id, this.signal);
      this.renderRun();
      await this.loadSeries();
      this.renderCurves();
      this.renderResources();
      await this.refreshPhases();
    } catch (e) {
      if (e.name !== "AbortError") this.el.actionMsg.textContent = e.message;
    }
  }

  // ------------------------------------------------------------------------------ series

  async loadSeries() {
    const load = (list) =>
      Promise.all(
        list.map(([k, n]) =>
          this.data.load(k, n, this.signal).catch((e) => {
            if (e.name === "AbortError") throw e;
          }),
        ),
      );
    // what every run has, in parallel with asking which optional series exist
    const core = [["train", "loss"], ["event", "start"], ["event", "goal_reached"]];
    if (this.goal?.metric) core.push(["val", this.goal.metric]);
    const optional = getMetrics(this.id, this.signal)
      .then(({ metrics }) => {
        const has = new Set(metrics.map((m) => `${m.kind}/${m.name}`));
        const more = [];
        if (has.has("comm/bytes_total")) more.push(["comm", "bytes_total"]);
        for (const def of RESOURCES) for (const n of def.names) if (has.has(`resource/${n}`)) more.push(["resource", n]);
        return load(more);
      })
      .catch((e) => {
        if (e.name === "AbortError") throw e;
      });
    await Promise.all([load(core), optional]);
  }

  renderCurves() {
    if (!this.loaded) return;
    const waiting = !TERMINAL.has(this.run.state);
    const bytesOpt = this.axisSel.querySelector('option[value="bytes"]');
    bytesOpt.disabled = !this.data.hasBytes();
    bytesOpt.textContent = bytesOpt.disabled ? "Bytes communicated (no comm events)" : "Bytes communicated";
    const axis = this.axis === "bytes" && bytesOpt.disabled ? "time" : this.axis;
    const loss = lossFigure(this.data, axis, waiting, this.goal?.metric);
    this.chart("loss", this.el.loss).update(loss.traces, loss.layout);
    const metric = metricFigure(this.data, this.goal, axis, waiting);
    this.chart("metric", this.el.metric).update(metric.traces, metric.layout);
  }

  renderResources() {
    if (!this.loaded) return;
    const present = RESOURCES.filter((def) => hasResource(this.data, def));
    this.el.resourcesEmpty.hidden = present.length > 0;
    for (const def of present) {
      let el = this.el.resources.querySelector(`[data-resource="${def.id}"]`);
      if (!el) {
        el = h("div", { class: "chart small", dataset: { resource: def.id, testid: `chart-${def.id}` } });
        this.el.resources.append(el);
      }
      const fig = resourceFigure(this.data, def);
      this.chart(`res-${def.id}`, el).update(fig.traces, fig.layout);
    }
  }

  // ------------------------------------------------------------------------------ phases

  schedulePhases() {
    clearTimeout(this.phaseTimer);
    this.phaseTimer = setTimeout(async () => {
      if (TERMINAL.has(this.run.state) || this.signal.aborted) return;
      if (!document.hidden) await this.refreshPhases();
      this.schedulePhases();
    }, PHASES_MS);
  }

  async refreshPhases() {
    try {
      const p = await getPhases(this.id, this.signal);
      this.phases = p.ranks;
    } catch (e) {
      if (e.name === "AbortError") return;
      this.phases ||= {}; // keep what was shown (e.g. while the master restarts)
    }
    if (!Object.keys(this.phases).length && this.run.result?.ranks) {
      this.phases = Object.fromEntries(this.run.result.ranks.map((rk) => [String(rk.rank), rk.phases || {}]));
    }
    this.renderPhases();
  }

  renderPhases() {
    // result.summary.stragglers: the slowest rank's compute per step against the median rank's
    const st = this.run.result?.summary?.stragglers;
    const flagged = st?.flagged ? String(st.slowest_rank) : null;
    this.el.straggler.hidden = !flagged;
    this.el.straggler.textContent = flagged
      ? `Straggler: rank ${flagged} computes ${fmtNumber(st.ratio)}× the median rank's time per step (flagged from ${st.threshold}×; docs/faults.md).`
      : "";
    const fig = phaseFigure(this.phases || {}, this.split, flagged);
    this.chart("phases", this.el.phases).update(fig.traces, fig.layout);
    this.el.phaseNote.textContent = TERMINAL.has(this.run.state)
      ? "Seconds each rank spent per phase over the whole run (sum of its phase events). compute = forward + backward + optimizer; communication is exposed communication (see docs/timing.md)."
      : "So far, updated every few seconds. compute = forward + backward + optimizer.";
  }

  // ------------------------------------------------------------------------------ logs

  appendLog({ rank, stream, text }) {
    const key = `${rank}:${stream}`;
    const entry = this.logs.get(key) || { text: "", trimmed: false };
    entry.text += text;
    if (entry.text.length > LOG_CAP) {
      entry.text = entry.text.slice(-LOG_CAP);
      entry.trimmed = true;
    }
    this.logs.set(key, entry);
    if (rank === this.logSel.rank && stream === this.logSel.stream) {
      if (entry.trimmed) this.renderLog();
      else {
        this.el.logPre.append(text);
        this.el.logNote.textContent = "";
        if (this.follow.checked) this.el.logPre.scrollTop = this.el.logPre.scrollHeight;
      }
    }
    this.renderTabs();
  }

  renderTabs() {
    for (const b of this.streamBtns) {
      const entry = this.logs.get(`${this.logSel.rank}:${b.dataset.stream}`);
      b.setAttribute("aria-pressed", String(b.dataset.stream === this.logSel.stream));
      b.textContent = entry?.text ? `${b.dataset.stream} ●` : b.dataset.stream;
    }
  }

  renderLog() {
    const entry = this.logs.get(`${this.logSel.rank}:${this.logSel.stream}`);
    this.el.logPre.textContent = entry?.text || "";
    this.el.logNote.textContent = entry?.trimmed
      ? "Showing the newest 1,000,000 characters; download the run for everything."
      : entry?.text
        ? ""
        : `No ${this.logSel.stream} output from rank ${this.logSel.rank}${TERMINAL.has(this.run.state) ? "." : " yet."}`;
    if (this.follow.checked) this.el.logPre.scrollTop = this.el.logPre.scrollHeight;
    this.renderTabs();
  }

  // ------------------------------------------------------------------------------ actions

  async cancel() {
    if (!confirm(`Cancel run ${this.id}? Its workers are stopped.`)) return;
    this.el.actionMsg.textContent = "";
    try {
      this.run = await cancelRun(this.id);
      this.renderRun();
    } catch (e) {
      this.el.actionMsg.textContent = `Could not cancel: ${e.message}`;
    }
  }

  async del() {
    if (!confirm(`Delete run ${this.id} and all its events? This cannot be undone.`)) return;
    this.el.actionMsg.textContent = "";
    try {
      await deleteRun(this.id);
      location.hash = "#/runs";
    } catch (e) {
      this.el.actionMsg.textContent = `Could not delete: ${e.message}`;
    }
  }

  async download() {
    this.el.actionMsg.textContent = "";
    this.btn.download.disabled = true;
    try {
      await downloadRun(this.id);
    } catch (e) {
      this.el.actionMsg.textContent = `Could not download: ${e.message}`;
    } finally {
      this.btn.download.disabled = false;
    }
  }
}
