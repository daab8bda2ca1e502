// Tasks: each task's full spec as the registry defines it (GET /api/tasks is generated from the
// same Task objects the workers run), and the algorithms with their options.

import { getAlgorithms, getTasks } from "../api.js";
import { cmp, h, rst } from "../format.js";

const show = (v) => (v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v));
const section = (key) => (key.includes(".") ? key.split(".")[0] : "run");

function configTable(task) {
  const groups = new Map();
  for (const c of task.config) {
    const s = section(c.key);
    if (!groups.has(s)) groups.set(s, []);
    groups.get(s).push(c);
  }
  return h(
    "table",
    { class: "spec", dataset: { testid: "task-config" } },
    h(
      "thead",
      {},
      h("tr", {}, ["key", "default", "division", "meaning"].map((c) => h("th", { scope: "col" }, c))),
    ),
    [...groups].map(([name, items]) =>
      h(
        "tbody",
        {},
        h("tr", { class: "group" }, h("th", { colspan: 4, scope: "rowgroup" }, name)),
        items.map((c) =>
          h(
            "tr",
            { dataset: { key: c.key } },
            h("td", { class: "mono" }, c.key),
            h("td", { class: "mono" }, show(c.default)),
            h("td", {}, h("span", { class: `division ${c.open ? "open" : "closed"}` }, c.open ? "open" : "closed")),
            h("td", {}, c.help),
          ),
        ),
      ),
    ),
  );
}

export async function mount(root, { params }) {
  document.title = "Tasks · mlbench";
  const [tasks, algorithms] = await Promise.all([getTasks(), getAlgorithms().catch(() => [])]);
  root.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Tasks")),
    h(
      "p",
      { class: "muted" },
      "Generated from the task registry the workers run. Closed keys define the benchmark: a run that changes one is unofficial. Open keys (paths, limits, logging) may change freely.",
    ),
    h(
      "nav",
      { class: "toc", "aria-label": "tasks" },
      tasks.map((t) => h("a", { href: `#/tasks?task=${t.name}` }, `${t.id} ${t.name}`)),
      h("a", { href: "#/tasks?task=algorithms" }, "algorithms"),
    ),
    ...tasks.map((t) => {
      const c = cmp(t.target.mode);
      return h(
        "article",
        { class: "task", id: `task-${t.name}`, dataset: { testid: "task", task: t.name } },
        h("h2", {}, `${t.id} · ${t.name}`),
        h("p", { class: "title" }, t.title),
        h(
          "dl",
          { class: "kv" },
          h("dt", {}, "Dataset"),
          h("dd", {}, t.dataset),
          h("dt", {}, "Model"),
          h("dd", {}, t.model),
          h("dt", {}, "Goal"),
          h("dd", {}, `validation ${t.target.metric} ${c} ${t.target.value}`),
          h("dt", {}, "Light goal"),
          h("dd", {}, `validation ${t.target.metric} ${c} ${t.target.light_value}`),
        ),
        h("a", { href: `#/new?task=${t.name}`, class: "button small" }, "New run of this task"),
        h("details", { open: true }, h("summary", {}, `Every hyperparameter (${t.config.length} keys)`), configTable(t)),
      );
    }),
    h(
      "article",
      { class: "task", id: "task-algorithms", dataset: { testid: "algorithms" } },
      h("h2", {}, "Algorithms"),
      h(
        "table",
        { class: "spec" },
        h("thead", {}, h("tr", {}, ["name", "what", "options (default)"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          algorithms.map((a) =>
            h(
              "tr",
              {},
              h("td", { class: "mono" }, a.name),
              h("td", {}, rst(a.summary)),
              h(
                "td",
                { class: "mono small" },
                a.options.map((o) => h("div", { title: o.help }, `${o.key.replace(/^algorithm\./, "")} = ${show(o.default)}`)),
              ),
            ),
          ),
        ),
      ),
    ),
  );
  const want = params.get("task");
  if (want) root.querySelector(`#task-${CSS.escape(want)}`)?.scrollIntoView();
}
