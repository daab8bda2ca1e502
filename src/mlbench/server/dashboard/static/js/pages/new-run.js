// New run: the form for POST /api/runs. Everything it offers comes from the master (tasks and
// their config keys, algorithms and their options, worker capacity, backends). It checks what it
// can before sending and shows the server's 422 messages next to the fields they name.

import { createRuns, getAlgorithms, getSettings, getTasks } from "../api.js";
import { clear, cmp, h, rst } from "../format.js";
import { Goal } from "../vocab.js";

const FIELDS = ["task", "algorithm", "workers", "backend", "goal", "repeats", "workers_sweep", "overrides"];
const RESERVED = { task: "task", goal: "goal", "algorithm.name": "algorithm" };

const show = (v) => (v === null ? "null" : Array.isArray(v) ? JSON.stringify(v) : String(v));

function field(id, label, control, { hint, testid } = {}) {
  const err = h("p", { class: "field-error", id: `err-${id}`, dataset: { testid: `error-${testid || id}` } });
  control.setAttribute("aria-describedby", `err-${id}${hint ? ` hint-${id}` : ""}`);
  return h(
    "div",
    { class: "field", dataset: { field: id } },
    h("label", { for: control.id }, label),
    control,
    hint ? h("p", { class: "hint", id: `hint-${id}` }, hint) : null,
    err,
  );
}

/** "1, 2 4" → [1, 2, 4]; throws a message on anything else. */
function parseSweep(text, max) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) return null;
  const out = parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new Error(`"${p}" is not a whole number`);
    const k = Number(p);
    if (k < 1 || k > max) throw new Error(`${k} is outside 1..${max}`);
    return k;
  });
  if (new Set(out).size !== out.length) throw new Error("a worker count appears twice");
  if (out.length > 32) throw new Error("at most 32 worker counts");
  return out;
}

export async function mount(root, { params }) {
  document.title = "New run · mlbench";
  const [settings, tasks, algorithms] = await Promise.all([getSettings(), getTasks(), getAlgorithms()]);
  const maxWorkers = settings.capacity_workers || 4096;

  // ---- controls
  const task = h(
    "select",
    { id: "f-task", name: "task", required: true, dataset: { testid: "f-task" } },
    tasks.map((t) => h("option", { value: t.name, selected: t.name === params.get("task") }, `${t.id} · ${t.name}`)),
  );
  const taskInfo = h("div", { class: "task-info", dataset: { testid: "task-info" } });
  const algorithm = h(
    "select",
    { id: "f-algorithm", name: "algorithm", dataset: { testid: "f-algorithm" } },
    algorithms.map((a) => h("option", { value: a.name, selected: a.name === "allreduce" }, a.name)),
  );
  const algoInfo = h("p", { class: "hint", dataset: { testid: "algorithm-summary" } });
  const algoOptions = h("fieldset", { class: "options", dataset: { testid: "algorithm-options" } });
  const workers = h("input", {
    id: "f-workers",
    name: "workers",
    type: "number",
    min: 1,
    max: maxWorkers,
    step: 1,
    value: Math.min(2, maxWorkers),
    required: true,
    dataset: { testid: "f-workers" },
  });
  const backend = h(
    "select",
    { id: "f-backend", name: "backend", dataset: { testid: "f-backend" } },
    settings.backends.map((b) => h("option", { value: b }, b)),
  );
  const goalFull = h("input", { type: "radio", name: "goal", id: "f-goal-full", value: Goal.FULL, checked: true });
  const goalLight = h("input", { type: "radio", name: "goal", id: "f-goal-light", value: Goal.LIGHT, dataset: { testid: "f-goal-light" } });
  const goalErr = h("p", { class: "field-error", id: "err-goal", dataset: { testid: "error-goal" } });
  const goal = h(
    "fieldset",
    { class: "field radio", "aria-describedby": "err-goal", dataset: { field: "goal" } },
    h("legend", {}, "Goal"),
    h("label", { for: "f-goal-full" }, goalFull, " full ", h("span", { class: "muted", id: "goal-full-text" })),
    h("label", { for: "f-goal-light" }, goalLight, " light ", h("span", { class: "muted", id: "goal-light-text" })),
    goalErr,
  );
  const repeats = h("input", { id: "f-repeats", name: "repeats", type: "number", min: 1, max: 100, step: 1, value: 1, dataset: { testid: "f-repeats" } });
  const sweep = h("input", { id: "f-sweep", name: "workers_sweep", type: "text", inputmode: "numeric", placeholder: "e.g. 1, 2, 4", dataset: { testid: "f-sweep" } });
  const overrides = h("textarea", {
    id: "f-overrides",
    name: "overrides",
    rows: 4,
    spellcheck: "false",
    placeholder: "one key=value per line, e.g.\ndata.dataset=a9a\noptim.lr=0.05",
    dataset: { testid: "f-overrides" },
  });
  const keysList = h("div", { class: "keys" });
  const submit = h("button", { type: "submit", dataset: { testid: "submit-run" } }, "Start");
  const formError = h("p", { class: "field-error", id: "err-_form", role: "alert", dataset: { testid: "error-form" } });
  const created = h("div", { class: "created", role: "status", dataset: { testid: "created" } });
  const preview = h("pre", { class: "code", dataset: { testid: "request-preview" } });

  const form = h(
    "form",
    { class: "run-form", novalidate: true, dataset: { testid: "new-run-form" } },
    h(
      "div",
      { class: "cols" },
      h(
        "div",
        {},
        field("task", "Task", task),
        taskInfo,
        field("algorithm", "Algorithm", algorithm),
        algoInfo,
        algoOptions,
      ),
      h(
        "div",
        {},
        field("workers", `Workers (1–${maxWorkers})`, workers, {
          hint: settings.capacity_workers
            ? `This master runs at most ${settings.capacity_workers} worker processes at once.`
            : null,
        }),
        field("workers_sweep", "Worker-count sweep", sweep, {
          hint: "One run per worker count (replaces Workers). Compare them for speedup.",
          testid: "workers_sweep",
        }),
        field("backend", "Backend", backend),
        goal,
        field("repeats", "Repeats", repeats, { hint: "Independent runs of each configuration." }),
        field("overrides", "Overrides", overrides, {
          hint: "Any config key of the task; closed keys make the run unofficial.",
        }),
        h("details", {}, h("summary", {}, "Config keys of this task"), keysList),
      ),
    ),
    formError,
    h("div", { class: "actions" }, submit),
    h("details", {}, h("summary", {}, "Request sent to the master"), preview),
  );

  root.append(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "New run")));
  if (!settings.scheduler) {
    root.append(h("p", { class: "notice" }, "This master records runs but does not launch them (started with --no-scheduler)."));
  }
  root.append(form, created);

  // ---- dependent parts
  const currentTask = () => tasks.find((t) => t.name === task.value);
  const currentAlgo = () => algorithms.find((a) => a.name === algorithm.value);

  function renderTask() {
    const t = currentTask();
    if (!t) return clear(taskInfo);
    const c = cmp(t.target.mode);
    clear(
      taskInfo,
      h("p", { class: "title" }, t.title),
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Dataset"),
        h("dd", {}, t.dataset),
        h("dt", {}, "Model"),
        h("dd", {}, t.model),
        h("dt", {}, "Goal"),
        h("dd", { dataset: { testid: "task-goal" } }, `${t.target.metric} ${c} ${t.target.value}`),
        h("dt", {}, "Light goal"),
        h("dd", { dataset: { testid: "task-light-goal" } }, `${t.target.metric} ${c} ${t.target.light_value}`),
      ),
      h("a", { href: `#/tasks?task=${t.name}`, class: "small" }, "Full spec"),
    );
    root.querySelector("#goal-full-text").textContent = `(${t.target.metric} ${c} ${t.target.value})`;
    root.querySelector("#goal-light-text").textContent = `(${t.target.metric} ${c} ${t.target.light_value})`;
    clear(
      keysList,
      h(
        "table",
        { class: "compact" },
        h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", {}, "default"), h("th", {}, "division"))),
        h(
          "tbody",
          {},
          t.config
            .filter((c) => !(c.key in RESERVED) && !c.key.startsWith("algorithm."))
            .map((c) =>
              h("tr", {}, h("td", { class: "mono" }, c.key), h("td", { class: "mono" }, show(c.default)), h("td", {}, c.open ? "open" : "closed")),
            ),
        ),
      ),
    );
  }

  function renderAlgorithm() {
    const a = currentAlgo();
    clear(algoInfo, a ? rst(a.summary) : "");
    clear(
      algoOptions,
      h("legend", {}, "Algorithm options ", h("span", { class: "muted small" }, "(empty = default)")),
      !a || !a.options.length ? h("p", { class: "muted small" }, "No options.") : null,
      (a ? a.options : []).map((o) => {
        const id = `opt-${o.key.replace(/\W/g, "-")}`;
        const control =
          typeof o.default === "boolean"
            ? h(
                "select",
                { id, dataset: { key: o.key, type: "bool", testid: id } },
                h("option", { value: "" }, `default (${o.default})`),
                h("option", { value: "true" }, "true"),
                h("option", { value: "false" }, "false"),
              )
            : h("input", {
                id,
                type: "text",
                placeholder: show(o.default),
                dataset: { key: o.key, type: Array.isArray(o.default) ? "list" : typeof o.default, testid: id },
              });
        control.setAttribute("aria-describedby", `err-${id}`);
        return h(
          "div",
          { class: "field compact", dataset: { field: id } },
          h("label", { for: id, class: "mono" }, o.key.replace(/^algorithm\./, "")),
          control,
          h("p", { class: "hint" }, o.help),
          h("p", { class: "field-error", id: `err-${id}`, dataset: { testid: `error-${id}` } }),
        );
      }),
    );
  }

  // ---- validation
  /** errors: {field or option id: [messages]}; each shown under its control, first focused. */
  function setErrors(errors) {
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    let first = null;
    for (const [f, msgs] of Object.entries(errors)) {
      const el = root.querySelector(`#err-${f}`);
      if (!el || !msgs.length) continue;
      el.textContent = msgs.join(" ");
      const ctl = root.querySelector(`[data-field="${f}"] :is(input, select, textarea)`);
      ctl?.setAttribute("aria-invalid", "true");
      first ||= ctl;
    }
    first?.focus();
  }

  /** Where a 422 message belongs. The master's `loc` names the field, and for a config error
   *  the index of the override line it blames; a line this form made from an algorithm option
   *  goes back under that option, a line the user typed under the overrides box. */
  function placeServerErrors(err, body) {
    const out = {};
    const add = (f, m) => (out[f] ||= []).push(m);
    const options = [...algoOptions.querySelectorAll("[data-key]")];
    for (const d of Array.isArray(err.detail) ? err.detail : []) {
      const loc = (d.loc || []).filter((p) => p !== "body");
      const field = typeof loc[0] === "string" ? loc[0] : "_form";
      if (field === "overrides" && typeof loc[1] === "number") {
        const key = (body.overrides[loc[1]] || "").split("=")[0].trim();
        const opt = options.find((c) => c.dataset.key === key);
        add(opt ? opt.id : "overrides", d.msg);
      } else {
        add(FIELDS.includes(field) ? field : "_form", d.msg);
      }
    }
    if (!Object.keys(out).length) add("_form", String(err.message || err));
    return out;
  }

  /** The request body, and {field: [messages]} for what is wrong with it. */
  function collect() {
    const errors = {};
    const add = (f, m) => (errors[f] ||= []).push(m);
    const t = currentTask();
    if (!t) add("task", "Choose a task.");
    const body = {
      task: task.value,
      algorithm: algorithm.value,
      backend: backend.value,
      goal: goalLight.checked ? Goal.LIGHT : Goal.FULL,
      workers: Number(workers.value),
      repeats: Number(repeats.value),
      overrides: [],
    };
    let swept = null;
    try {
      swept = parseSweep(sweep.value, maxWorkers);
    } catch (e) {
      add("workers_sweep", e.message);
    }
    if (swept) body.workers_sweep = swept;
    else if (!/^\d+$/.test(workers.value) || body.workers < 1 || body.workers > maxWorkers) {
      add("workers", `Enter a whole number from 1 to ${maxWorkers}.`);
    }
    if (!/^\d+$/.test(repeats.value) || body.repeats < 1 || body.repeats > 100) {
      add("repeats", "Enter a whole number from 1 to 100.");
    }
    const keys = new Set((t?.config || []).map((c) => c.key));
    for (const ctl of algoOptions.querySelectorAll("[data-key]")) {
      const v = ctl.value.trim();
      if (!v) continue;
      if (ctl.dataset.type === "number" && v !== "null" && !Number.isFinite(Number(v))) {
        add(ctl.id, `"${v}" is not a number.`);
      }
      body.overrides.push(`${ctl.dataset.key}=${v}`);
    }
    overrides.value.split("\n").forEach((line, i) => {
      const s = line.trim();
      if (!s || s.startsWith("#")) return;
      const m = s.match(/^([A-Za-z0-9_.]+)\s*=(.*)$/);
      if (!m) return add("overrides", `Line ${i + 1}: write key=value.`);
      if (m[1] in RESERVED) return add("overrides", `Line ${i + 1}: set ${m[1]} with the ${RESERVED[m[1]]} field.`);
      if (t && !keys.has(m[1])) return add("overrides", `Line ${i + 1}: ${t.name} has no config key "${m[1]}" (see the list below).`);
      body.overrides.push(`${m[1]}=${m[2].trim()}`);
    });
    if (swept) delete body.workers;
    return { body, errors };
  }

  const updatePreview = () => {
    preview.textContent = `POST /api/runs\n${JSON.stringify(collect().body, null, 2)}`;
  };

  task.addEventListener("change", () => {
    renderTask();
    updatePreview();
  });
  algorithm.addEventListener("change", () => {
    renderAlgorithm();
    updatePreview();
  });
  form.addEventListener("input", updatePreview);
  sweep.addEventListener("input", () => {
    workers.disabled = Boolean(sweep.value.trim());
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const { body, errors } = collect();
    setErrors(errors);
    clear(created);
    if (Object.keys(errors).length) return;
    submit.disabled = true;
    submit.textContent = "Starting…";
    try {
      const res = await createRuns(body);
      const ids = res.runs.map((r) => r.id);
      if (ids.length === 1) {
        location.hash = `#/run/${ids[0]}`;
        return;
      }
      clear(
        created,
        h("p", {}, `Created ${ids.length} runs:`),
        h(
          "ul",
          {},
          res.runs.map((r) =>
            h("li", {}, h("a", { href: `#/run/${r.id}`, class: "mono", dataset: { testid: "created-run" } }, r.id), ` · ${r.workers} workers · ${r.state}`),
          ),
        ),
        h("a", { href: `#/compare?ids=${ids.join(",")}`, class: "button", dataset: { testid: "compare-created" } }, "Compare them"),
      );
    } catch (err) {
      if (err.status === 422) setErrors(placeServerErrors(err, body));
      else {
        setErrors({ _form: [err.message] });
      }
    } finally {
      submit.disabled = false;
      submit.textContent = "Start";
    }
  });

  renderTask();
  renderAlgorithm();
  updatePreview();
}
