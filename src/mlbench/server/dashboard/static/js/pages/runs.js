// Runs: every run in a table, filterable (state, task, official on the server; text here) and
// sortable, refreshed every few seconds while the tab is visible.

import { getTasks, listRuns } from "../api.js";
import { RUN_STATES, RunState } from "../vocab.js";
import {
  DASH,
  TERMINAL,
  clear,
  fmtDate,
  fmtSeconds,
  h,
  runDuration,
  stateBadge,
} from "../format.js";

const POLL_MS = 3000;
const PAGE = 200;

const reached = (r) => r.result?.goal?.reached ?? null;
const ttt = (r) => (reached(r) ? (r.result?.summary?.time_to_target ?? null) : null);

const COLUMNS = [
  { id: "id", label: "Run", get: (r) => r.id },
  { id: "task", label: "Task", get: (r) => r.task },
  { id: "algorithm", label: "Algorithm", get: (r) => r.algorithm },
  { id: "workers", label: "Workers", get: (r) => r.workers, num: true },
  { id: "backend", label: "Backend", get: (r) => r.backend },
  { id: "state", label: "State", get: (r) => r.state },
  { id: "reached", label: "Goal reached?", get: (r) => (reached(r) === null ? -1 : +reached(r)) },
  { id: "ttt", label: "Time to target", get: ttt, num: true },
  { id: "official", label: "Official?", get: (r) => (r.official === null ? -1 : +r.official) },
  { id: "started", label: "Started", get: (r) => r.started_at || "" },
  { id: "duration", label: "Duration", get: (r) => runDuration(r), num: true },
];

function compareBy(col, dir) {
  return (a, b) => {
    const x = col.get(a);
    const y = col.get(b);
    if (x === y) return 0;
    if (x === null || x === undefined) return 1; // empty cells last, either direction
    if (y === null || y === undefined) return -1;
    const c = col.num ? x - y : String(x).localeCompare(String(y), "en", { numeric: true });
    return dir === "asc" ? c : -c;
  };
}

function cells(r) {
  const ok = reached(r);
  const t = ttt(r);
  return {
    id: h("a", { href: `#/run/${r.id}`, class: "mono", dataset: { testid: "run-link" } }, r.id),
    task: r.task,
    algorithm: r.algorithm,
    workers: String(r.workers),
    backend: r.backend,
    state: stateBadge(r.state),
    reached: h(
      "span",
      { class: ok === true ? "yes" : ok === false ? "no" : "muted" },
      ok === true ? "yes" : ok === false ? "no" : TERMINAL.has(r.state) ? DASH : "…",
      h("span", { class: "muted small" }, ` (${r.goal})`),
    ),
    ttt: h(
      "span",
      {
        title:
          t === null
            ? null
            : `wall time to target ${fmtSeconds(r.result.summary.wall_time_to_target)}`,
      },
      fmtSeconds(t),
    ),
    official: r.official === null ? DASH : r.official ? "yes" : "no",
    started: fmtDate(r.started_at),
    duration: fmtSeconds(runDuration(r)),
  };
}

export async function mount(root, { params, signal }) {
  document.title = "Runs · mlbench";
  const state = {
    state: params.get("state") || "",
    task: params.get("task") || "",
    official: params.get("official") || "",
    q: params.get("q") || "",
    sort: params.get("sort") || "",
    dir: params.get("dir") || "desc",
    limit: PAGE,
    runs: [],
    raw: "",
    selected: new Set(),
  };

  const sel = (id, label, options, value) =>
    h(
      "label",
      { class: "field inline" },
      label,
      h(
        "select",
        { id, dataset: { testid: id } },
        options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
      ),
    );
  const stateSel = sel(
    "filter-state",
    "State",
    [["", "any"], ...RUN_STATES.map((s) => [s, s])],
    state.state,
  );
  const taskSel = sel("filter-task", "Task", [["", "any"]], state.task);
  const offSel = sel(
    "filter-official",
    "Official",
    [
      ["", "any"],
      ["true", "yes"],
      ["false", "no"],
    ],
    state.official,
  );
  const search = h("input", {
    id: "filter-text",
    type: "search",
    placeholder: "id, algorithm, backend…",
    value: state.q,
    dataset: { testid: "filter-text" },
  });
  const compareBtn = h(
    "button",
    { type: "button", dataset: { testid: "compare-selected" }, disabled: true },
    "Compare selected",
  );
  const status = h("p", { class: "muted small", role: "status", dataset: { testid: "runs-status" } });
  const thead = h("thead");
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "ghost", hidden: true }, "Show more");
  const table = h("table", { class: "runs", dataset: { testid: "runs-table" } }, thead, tbody);

  root.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", { tabindex: "-1" }, "Runs"),
      h("a", { href: "#/new", class: "button" }, "New run"),
    ),
    h(
      "div",
      { class: "filters", role: "search" },
      stateSel,
      taskSel,
      offSel,
      h("label", { class: "field inline" }, "Filter", search),
      compareBtn,
    ),
    status,
    h("div", { class: "table-wrap" }, table),
    more,
  );

  const taskSelect = taskSel.querySelector("select");
  getTasks()
    .then((tasks) => {
      for (const t of tasks) {
        taskSelect.append(h("option", { value: t.name, selected: t.name === state.task }, `${t.id} ${t.name}`));
      }
    })
    .catch(() => {});

  function syncUrl() {
    const p = new URLSearchParams();
    for (const k of ["state", "task", "official", "q", "sort"]) if (state[k]) p.set(k, state[k]);
    if (state.sort) p.set("dir", state.dir);
    const qs = p.toString();
    history.replaceState(null, "", `#/runs${qs ? `?${qs}` : ""}`);
  }

  function renderHead() {
    clear(
      thead,
      h(
        "tr",
        {},
        h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Select")),
        COLUMNS.map((c) =>
          h(
            "th",
            {
              scope: "col",
              "aria-sort":
                state.sort === c.id ? (state.dir === "asc" ? "ascending" : "descending") : null,
            },
            h(
              "button",
              {
                type: "button",
                class: "sort",
                dataset: { testid: `sort-${c.id}` },
                onclick: () => {
                  state.dir = state.sort === c.id && state.dir === "desc" ? "asc" : "desc";
                  state.sort = c.id;
                  syncUrl();
                  renderHead();
                  renderBody();
                },
              },
              c.label,
              state.sort === c.id ? (state.dir === "asc" ? " ▲" : " ▼") : "",
            ),
          ),
        ),
      ),
    );
  }

  function visible() {
    const q = state.q.trim().toLowerCase();
    let rows = state.runs;
    if (q) {
      rows = rows.filter((r) =>
        [r.id, r.algorithm, r.backend, r.task, r.state, ...(r.overrides || [])]
          .join(" ")
          .toLowerCase()
          .includes(q),
      );
    }
    const col = COLUMNS.find((c) => c.id === state.sort);
    return col ? [...rows].sort(compareBy(col, state.dir)) : rows;
  }

  function renderBody() {
    const rows = visible();
    if (!rows.length) {
      clear(
        tbody,
        h(
          "tr",
          {},
          h(
            "td",
            { colspan: COLUMNS.length + 1, class: "empty" },
            state.runs.length ? "No run matches the filter." : "No runs yet. ",
            state.runs.length ? null : h("a", { href: "#/new" }, "Start one"),
          ),
        ),
      );
    } else {
      clear(
        tbody,
        rows.map((r) => {
          const c = cells(r);
          return h(
            "tr",
            { dataset: { runId: r.id, testid: "run-row", state: r.state } },
            h(
              "td",
              {},
              h("input", {
                type: "checkbox",
                "aria-label": `select ${r.id} for comparison`,
                checked: state.selected.has(r.id),
                dataset: { testid: "run-select" },
                onchange: (e) => {
                  if (e.target.checked) state.selected.add(r.id);
                  else state.selected.delete(r.id);
                  renderCompare();
                },
              }),
            ),
            COLUMNS.map((col) => h("td", { class: col.num ? "num" : null, dataset: { col: col.id } }, c[col.id])),
          );
        }),
      );
    }
    status.textContent = `${rows.length} of ${state.runs.length} runs shown`;
    more.hidden = state.runs.length < state.limit;
  }

  function renderCompare() {
    const n = state.selected.size;
    compareBtn.disabled = n < 2;
    compareBtn.textContent = n ? `Compare selected (${n})` : "Compare selected";
  }

  compareBtn.addEventListener("click", () => {
    location.hash = `#/compare?ids=${[...state.selected].join(",")}`;
  });

  let timer = null;
  let inflight = null;
  signal.addEventListener("abort", () => inflight?.abort());
  async function refresh() {
    clearTimeout(timer);
    if (signal.aborted) return;
    if (document.hidden) {
      timer = setTimeout(refresh, POLL_MS);
      return;
    }
    inflight?.abort();
    const ctrl = new AbortController();
    inflight = ctrl;
    try {
      const data = await listRuns(
        { state: state.state, task: state.task, official: state.official, limit: state.limit },
        ctrl.signal,
      );
      const raw = JSON.stringify(data.runs);
      if (raw !== state.raw) {
        state.raw = raw;
        state.runs = data.runs;
        renderBody();
      } else {
        // only the live durations changed
        for (const r of state.runs.filter((x) => x.state === RunState.RUNNING)) {
          const td = tbody.querySelector(`tr[data-run-id="${CSS.escape(r.id)}"] td[data-col="duration"]`);
          if (td) td.textContent = fmtSeconds(runDuration(r));
        }
      }
      root.dataset.loaded = "1";
    } catch (e) {
      if (e.name === "AbortError") return;
      status.textContent = `Could not load runs: ${e.message}`;
    }
    if (!signal.aborted) timer = setTimeout(refresh, POLL_MS);
  }

  const onFilter = () => {
    state.state = stateSel.querySelector("select").value;
    state.task = taskSelect.value;
    state.official = offSel.querySelector("select").value;
    syncUrl();
    state.raw = "";
    refresh();
  };
  for (const s of [stateSel, taskSel, offSel]) s.querySelector("select").addEventListener("change", onFilter);
  search.addEventListener("input", () => {
    state.q = search.value;
    syncUrl();
    renderBody();
  });
  more.addEventListener("click", () => {
    state.limit = Math.min(1000, state.limit + PAGE);
    refresh();
  });
  const onVisible = () => {
    if (!document.hidden) refresh();
  };
  document.addEventListener("visibilitychange", onVisible);

  renderHead();
  renderCompare();
  await refresh();
  return () => {
    clearTimeout(timer);
    inflight?.abort();
    document.removeEventListener("visibilitychange", onVisible);
  };
}
