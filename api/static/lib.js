// Shared helpers of the page: DOM building (never innerHTML with data), the API client, formatting.

export const session = { key: null, tenant: null, keyType: null, rules: {} };

const STORE = "sieve-api-key";

export function savedKey() { return sessionStorage.getItem(STORE); }
export function saveKey(key) { sessionStorage.setItem(STORE, key); }
export function forgetKey() { sessionStorage.removeItem(STORE); }

/** h("div", {class: "x", onclick: f}, child, "text", [more]) builds an element; null children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) { onUnauthorized = callback; }

/** Calls the API with the signed-in key. Resolves to the parsed JSON (or text with `text: true`);
 *  rejects with ApiError(status, the service's message). A 401 after sign-in signs out. */
export async function api(path, { method = "GET", json, form, text = false, key = session.key } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError(0, `the service did not answer (${err.message}); is it running?`);
  }
  if (!response.ok) {
    const message = await errorMessage(response);
    if (response.status === 401 && key === session.key && session.key) onUnauthorized(message);
    throw new ApiError(response.status, message);
  }
  if (text) return response.text();
  return response.status === 204 ? null : response.json();
}

async function errorMessage(response) {
  let raw = "";
  try { raw = await response.text(); } catch { /* no body */ }
  try {
    const body = JSON.parse(raw);
    if (body.error && body.error.message) return body.error.message;
    if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    if (body.detail) return String(body.detail);
  } catch { /* not JSON */ }
  return raw.slice(0, 300) || `${response.status} ${response.statusText}`;
}

/** Milliseconds in readable units: 0.4 ms, 12 ms, 1.24 s. */
export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  return `${(value / 1000).toFixed(value < 10000 ? 2 : 1)} s`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return "–";
  const d = new Date(epochSeconds * 1000);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export const short = (version) => (version ? version.slice(0, 10) : "–");
export const score = (value) => (value === null || value === undefined ? "–" : value.toFixed(3));

/** Tells screen readers (and the visible status line passed) what just happened. */
export function announce(message, target = null, kind = "info") {
  const live = $("#live");
  live.textContent = "";
  setTimeout(() => { live.textContent = message; }, 30);
  if (target) {
    target.textContent = message;
    target.dataset.kind = kind;
  }
}

export function metadataChips(metadata) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return h("span", { class: "muted" }, "no metadata");
  return h("ul", { class: "chips", "aria-label": "metadata" },
    entries.map(([k, v]) => h("li", { class: "chip" }, `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)));
}

export function badge(text, kind, tip) {
  return h("span", { class: `badge ${kind}`, title: tip || null, tabindex: tip ? "0" : null, "data-tip": tip || null }, text);
}

/** Runs `task(item)` over `items` with at most `limit` at a time. */
export async function pool(items, limit, task) {
  const queue = [...items];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await task(queue.shift());
  });
  await Promise.all(workers);
}
