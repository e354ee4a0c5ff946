// Status: readiness of each part, the models that serve, the index (and a rebuild's progress), the rerank gate.
import { $, announce, api, badge, h, when } from "./lib.js";

const REFRESH_MS = 5000;
let timer = null;
let wired = false;

export function show() {
  if (!wired) { wired = true; $("#st-refresh").addEventListener("click", load); }
  load();
  timer = setInterval(load, REFRESH_MS);
}

export function hide() { clearInterval(timer); timer = null; }

async function get(path, options) {
  try { return await api(path, options); } catch (err) { return { error: err }; }
}

async function readiness() {
  // /ready answers 503 with its checks when a part is down: read the body either way.
  try {
    const response = await fetch("/ready");
    return await response.json();
  } catch (err) {
    return { ready: false, checks: {}, error: err };
  }
}

async function load() {
  const [ready, info, web] = await Promise.all([readiness(), get("/info"), get("/v1/web/status")]);
  renderParts(ready, web);
  if (info.error) announce(`Could not read /info: ${info.error.message}`, $("#st-msg"), "error");
  else {
    $("#st-msg").textContent = `${info.service} ${info.version} · updated ${new Date().toLocaleTimeString()}`;
    $("#st-msg").dataset.kind = "info";
    renderModels(info.models || {});
    renderIndex(info.index);
    renderLimits(info.limits || {});
  }
  renderGate(info.rerank_gate, web.gates);
}

function state(ok, text) {
  return badge(ok ? "ok" : "down", ok ? "ok" : "bad", text || null);
}

function table(caption, head, rows) {
  return h("table", { class: "grid compact" },
    h("caption", { class: "sr-only" }, caption),
    head ? h("thead", {}, h("tr", {}, head.map((x) => h("th", { scope: "col" }, x)))) : null,
    h("tbody", {}, rows));
}

function kv(caption, pairs) {
  return table(caption, null, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, v))));
}

function renderParts(ready, web) {
  const checks = ready.checks || {};
  const workers = web.workers;
  const rows = [
    ["API", state(true), "answering"],
    ["Workers", workers ? state(workers.ok) : state(false),
      workers ? (workers.ok ? workers.names.join(", ") : workers.error) : (web.error?.message || "unknown")],
    ["Milvus (vector store)", state(checks.vector_store === "ok"), checks.vector_store || "not reported"],
    ["Redis (jobs, queue, cache)", state(checks.redis === "ok"), checks.redis || "not reported"],
    ["Embedder", state(Boolean(checks.embedder)), checks.embedder || "–"],
    ["Reranker", checks.reranker === "none" ? badge("off", "info") : state(Boolean(checks.reranker)),
      checks.reranker === "none" ? "none configured: search answers in stage-1 order" : checks.reranker || "–"],
  ].map(([name, badgeEl, detail]) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, badgeEl), h("td", { class: "wrap" }, detail)));
  $("#st-parts").replaceChildren(
    h("p", {}, ready.ready ? badge("ready", "ok") : badge("not ready", "bad"), " for search and uploads"),
    table("Readiness of each part", ["Part", "State", "Detail"], rows));
}

function renderModels(models) {
  const rows = Object.entries(models).map(([role, m]) => h("tr", {},
    h("th", { scope: "row" }, role),
    h("td", { class: "wrap" }, m.name, m.backend ? h("div", { class: "muted small" }, `backend ${m.backend}`) : null),
    h("td", { class: "wrap" }, m.model || "default", m.revision ? h("div", { class: "muted small" }, `revision ${m.revision}`) : null),
    h("td", {}, [m.device, m.dimension ? `${m.dimension} dims` : null, m.max_tokens ? `${m.max_tokens} tokens` : null]
      .filter(Boolean).join(" · ") || "–")));
  $("#st-models").replaceChildren(table("Served models", ["Role", "Name", "Model and revision", "Runs"], rows));
}

function renderIndex(index) {
  const box = $("#st-index");
  if (!index) { box.replaceChildren(h("p", { class: "muted" }, "No index information.")); return; }
  const serving = index.serving || {};
  const parts = [kv("The serving index", [
    ["Collection", serving.collection], ["Embedder", serving.embedder_name || serving.embedder],
    ["Embedder model", serving.embedder_model], ["Revision", serving.revision],
    ["Switched", serving.switched_at ? when(serving.switched_at) : null]])];
  const build = index.rebuild;
  if (build) {
    const total = build.documents_total || 0;
    parts.push(h("h3", {}, "Rebuild ", badge(build.state, build.state === "failed" ? "bad" : build.state === "switched" ? "ok" : "info")),
      h("p", { class: "bar-wrap" },
        h("progress", { max: total || 1, value: build.documents_done || 0, "aria-label": "documents re-embedded" }),
        h("span", {}, `${build.documents_done}/${total} documents · ${build.chunks} passages` +
          (build.documents_failed ? ` · ${build.documents_failed} failed` : ""))),
      kv("The index being built", [["Collection", build.collection], ["Embedder model", build.embedder_model],
        ["Started", when(build.started_at)], ["Updated", when(build.updated_at)], ["Error", build.error]]));
  } else {
    parts.push(h("p", { class: "muted" }, "No rebuild in progress (", h("code", {}, "sieve reindex"), " starts one)."));
  }
  if (index.previous) parts.push(h("p", { class: "muted small" }, `Previous index kept: ${index.previous.collection}`));
  box.replaceChildren(...parts);
}

function renderGate(summary, gates) {
  const box = $("#st-gate");
  if (!summary && !gates) { box.replaceChildren(h("p", { class: "muted" }, "No reranker configured.")); return; }
  const mode = summary?.mode || Object.values(gates || {})[0]?.mode;
  const explain = { evaluated: "stage 2 runs for a tenant only where an evaluation showed that it helps",
                    always: "stage 2 runs whenever a reranker is configured", off: "stage 2 never runs" };
  const rows = Object.entries(gates || {}).map(([tenant, g]) => h("tr", {},
    h("th", { scope: "row" }, tenant),
    h("td", {}, g.enabled ? badge("on", "ok") : badge("off", "warn")),
    h("td", { class: "wrap" }, g.reason || "", g.fusion ? h("div", { class: "muted small" }, `fusion: ${g.fusion}`) : null,
      g.stage1 ? h("div", { class: "muted small" }, `stage 1: ${g.stage1.learned ? g.stage1.label : "default"} (${g.stage1.reason})`) : null,
      g.decided_at ? h("div", { class: "muted small" }, `decided ${new Date(g.decided_at).toLocaleString()}`) : null)));
  box.replaceChildren(
    h("p", {}, "Mode ", h("code", {}, mode || "–"), mode ? `: ${explain[mode] || ""}` : ""),
    rows.length ? table("Rerank gate per tenant", ["Tenant", "Stage 2", "Why"], rows)
      : h("p", { class: "muted" }, "No tenant to show."));
}

function renderLimits(limits) {
  $("#st-limits").replaceChildren(kv("Limits", Object.entries(limits).map(([k, v]) => [k.replaceAll("_", " "), String(v)])));
}
