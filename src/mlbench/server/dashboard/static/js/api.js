// The master's REST API, with the bearer token from local storage.
// A 401/403 also raises a window event ("mlbench:auth-error") so the page can say so clearly.

const TOKEN_KEY = "mlbench.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives as long as the page */
  }
  window.dispatchEvent(new CustomEvent("mlbench:token"));
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The server's `detail`: a string, or FastAPI's list of {loc, msg}. */
export function describeDetail(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return loc ? `${loc}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

export class ApiError extends Error {
  constructor(status, detail, path) {
    const text = describeDetail(detail) || "request failed";
    super(status ? `${status}: ${text}` : text);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }

  /** {field: [messages]} from a 422's detail list (loc = ["body", field, index?, ...]). */
  fieldErrors() {
    const out = {};
    if (!Array.isArray(this.detail)) return out;
    for (const d of this.detail) {
      const loc = (d.loc || []).filter((p) => p !== "body");
      const field = typeof loc[0] === "string" ? loc[0] : "_form";
      const where = loc.slice(1).filter((p) => typeof p === "number");
      const msg = where.length ? `item ${where[0] + 1}: ${d.msg}` : d.msg;
      (out[field] ||= []).push(msg);
    }
    return out;
  }
}

export async function errorFrom(res, path) {
  let detail = res.statusText;
  try {
    const body = await res.json();
    detail = body.detail ?? detail;
  } catch {
    /* not JSON */
  }
  const err = new ApiError(res.status, detail, path);
  if (err.isAuth) window.dispatchEvent(new CustomEvent("mlbench:auth-error", { detail: err }));
  return err;
}

/** fetch() a path of this master; JSON in and out. Throws ApiError (status 0: no answer). */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `the master did not answer (${e.message})`, path);
  }
  if (!res.ok) throw await errorFrom(res, path);
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) s.append(k, String(item));
  }
  const text = s.toString();
  return text ? `?${text}` : "";
};

const enc = encodeURIComponent;

// Tasks, algorithms and settings don't change while a master runs: fetched once per page load.
const once = new Map();
function cached(path) {
  if (!once.has(path)) {
    const p = api(path);
    p.catch(() => once.delete(path)); // retry after e.g. a token was pasted
    once.set(path, p);
  }
  return once.get(path);
}

export const forgetCache = () => once.clear();

export const getHealth = () => api("/api/health");
export const getSettings = () => cached("/api/settings");
export const getTasks = () => cached("/api/tasks");
export const getAlgorithms = () => cached("/api/algorithms");
export const listRuns = (params = {}, signal) => api(`/api/runs${q(params)}`, { signal });
export const getRun = (id, signal) => api(`/api/runs/${enc(id)}`, { signal });
export const createRuns = (body) => api("/api/runs", { method: "POST", body });
export const cancelRun = (id) => api(`/api/runs/${enc(id)}/cancel`, { method: "POST" });
export const deleteRun = (id) => api(`/api/runs/${enc(id)}`, { method: "DELETE" });
export const getMetrics = (id, signal) => api(`/api/runs/${enc(id)}/metrics`, { signal });
export const getPhases = (id, signal) => api(`/api/runs/${enc(id)}/phases`, { signal });
export const getSeries = (id, kind, name, maxPoints, signal, rank) =>
  api(`/api/runs/${enc(id)}/series${q({ kind, name, max_points: maxPoints, rank })}`, { signal });
export const streamPath = (id, params) => `/api/runs/${enc(id)}/stream${q(params)}`;
export const downloadPath = (id) => `/api/runs/${enc(id)}/download`;

/** Download a run's zip: fetched with the token (a plain link can't send it), saved as a file. */
export async function downloadRun(id) {
  const res = await api(downloadPath(id), { raw: true });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `${id}.zip`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob.size;
}
