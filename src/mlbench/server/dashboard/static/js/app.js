// The dashboard shell: hash router, token panel, the 401/403 banner.
//   #/runs  #/new  #/run/ID  #/compare?ids=a,b  #/tasks

import { forgetCache, getHealth, getToken, setToken } from "./api.js";
import { clear, h } from "./format.js";
import * as compare from "./pages/compare.js";
import * as newRun from "./pages/new-run.js";
import * as runDetail from "./pages/run-detail.js";
import * as runs from "./pages/runs.js";
import * as tasks from "./pages/tasks.js";

const ROUTES = [
  { re: /^\/runs$/, nav: "runs", page: runs },
  { re: /^\/new$/, nav: "new", page: newRun },
  { re: /^\/run\/([^/]+)$/, nav: "runs", page: runDetail },
  { re: /^\/compare$/, nav: "compare", page: compare },
  { re: /^\/tasks$/, nav: "tasks", page: tasks },
];

const app = document.getElementById("app");
const banner = document.getElementById("banner");
let current = null; // {cleanup, ctrl}
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = raw.split("?");
  return { path: decodeURIComponent(path) || "/runs", params: new URLSearchParams(query) };
}

async function route() {
  const gen = ++generation;
  if (current) {
    current.ctrl.abort();
    try {
      current.cleanup?.();
    } catch (e) {
      console.warn("page cleanup failed", e);
    }
    current = null;
  }
  const { path, params } = parseHash();
  const match = ROUTES.map((r) => [r, path.match(r.re)]).find(([, m]) => m);
  for (const a of document.querySelectorAll("[data-nav]")) {
    const active = match && a.dataset.nav === match[0].nav;
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = h("div", { class: "page" });
  clear(app, root);
  if (!match) {
    root.append(
      h("h1", {}, "Not found"),
      h("p", {}, "No page at ", h("code", {}, location.hash), ". "),
      h("a", { href: "#/runs" }, "Back to the runs"),
    );
    return;
  }
  const [r, m] = match;
  const ctrl = new AbortController();
  current = { ctrl, cleanup: null };
  const ctx = { params, id: m[1], signal: ctrl.signal };
  try {
    const cleanup = await r.page.mount(root, ctx);
    if (gen !== generation) cleanup?.();
    else current.cleanup = cleanup;
  } catch (e) {
    if (e.name === "AbortError" || gen !== generation) return;
    root.append(h("p", { class: "error", role: "alert", dataset: { testid: "page-error" } }, e.message));
  }
}

// ------------------------------------------------------------------------- token and banner

const toggle = document.getElementById("token-toggle");
const panel = document.getElementById("token-panel");
const input = document.getElementById("token-input");

function showPanel(open) {
  panel.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
  if (open) input.focus();
}

function renderToken() {
  const has = Boolean(getToken());
  toggle.textContent = has ? "Token ✓" : "Token";
  toggle.title = has ? "a token is saved in this browser" : "no token saved";
  toggle.classList.toggle("warn", !has);
}

toggle.addEventListener("click", () => showPanel(panel.hidden));
panel.addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(input.value.trim());
  input.value = "";
  showPanel(false);
});
document.getElementById("token-clear").addEventListener("click", () => {
  setToken("");
  input.value = "";
  showPanel(false);
});

window.addEventListener("mlbench:token", () => {
  renderToken();
  banner.hidden = true;
  forgetCache();
  route();
});

window.addEventListener("mlbench:auth-error", (e) => {
  const err = e.detail;
  const what =
    err.status === 401
      ? getToken()
        ? "The master did not accept the saved token"
        : "The master needs a token to show this"
      : "The saved token is not allowed to do this";
  clear(
    banner,
    h("strong", {}, `${what} (${err.message}). `),
    "Paste an admin token made with ",
    h("code", {}, "mlbench token create"),
    " under ",
    h("button", { type: "button", class: "link", onclick: () => showPanel(true) }, "Token"),
    ".",
  );
  banner.dataset.status = String(err.status);
  banner.hidden = false;
});

// -------------------------------------------------------------------------------- start

renderToken();
window.addEventListener("hashchange", () => {
  banner.hidden = true;
  route();
});
getHealth()
  .then((hl) => {
    document.getElementById("version").textContent =
      `mlbench ${hl.version} · ${hl.database} database · ${location.host}`;
  })
  .catch(() => {});
route();
