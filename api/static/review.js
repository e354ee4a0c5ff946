// Review: flagged searches merged by query, their clusters, labelling by keyboard, the JSONL export.
import { $, announce, api, h, score, session, when } from "./lib.js";

const MAX_ITEMS = 2000;
let groups = [];              // {query, items: [...], latest, labelled}
let selected = null;          // the group shown in the detail panel
let chosen = new Set();       // indices (in the shown item's candidates) marked as answering
let noneAnswers = false;
let only = null;              // item ids of a cluster the list is narrowed to
let wired = false;

export function show() {
  if (!wired) wire();
  load();
}

export function hide() {}

function wire() {
  wired = true;
  $("#r-state").addEventListener("change", () => { only = null; load(); });
  $("#r-tenant").addEventListener("change", () => { only = null; load(); });
  $("#r-refresh").addEventListener("click", () => { only = null; load(); });
  $("#r-export").addEventListener("click", exportLabels);
  $("#r-detail").addEventListener("keydown", keys);
}

function query(params) {
  const search = new URLSearchParams(params);
  const tenant = session.keyType === "admin" ? $("#r-tenant").value.trim() : "";
  if (tenant) search.set("tenant", tenant);
  return search.toString();
}

async function load() {
  const msg = $("#r-msg");
  const state = $("#r-state").value;
  try {
    const items = [];
    let cursor = null;
    do {
      const params = { limit: "500" };
      if (state) params.state = state;
      if (cursor) params.cursor = cursor;
      const page = await api(`/v1/review?${query(params)}`);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && items.length < MAX_ITEMS);
    groups = merge(items);
    $("#r-count").textContent = `${items.length} flagged search${items.length === 1 ? "" : "es"}, ` +
      `${groups.length} distinct quer${groups.length === 1 ? "y" : "ies"}`;
  } catch (err) {
    groups = [];
    $("#r-count").textContent = "";
    announce(`Could not read the review queue: ${err.message}`, msg, "error");
  }
  if (selected) selected = groups.find((g) => g.key === selected.key) || null;
  renderGroups();
  renderDetail();
  loadClusters(state);
}

/** One entry per query (case and spaces ignored), the newest item first. */
function merge(items) {
  const byQuery = new Map();
  for (const item of items) {
    const key = `${item.tenant}\u0000${item.query.trim().toLowerCase().replace(/\s+/g, " ")}`;
    if (!byQuery.has(key)) byQuery.set(key, { key, query: item.query, tenant: item.tenant, items: [] });
    byQuery.get(key).items.push(item);
  }
  const out = [...byQuery.values()];
  for (const group of out) {
    group.items.sort((a, b) => b.created_at - a.created_at);
    group.latest = group.items[0];
    group.labelled = group.items.every((item) => item.label);
    group.best = Math.max(...group.items.map((item) => item.best));
  }
  return out.sort((a, b) => b.latest.created_at - a.latest.created_at);
}

function renderGroups() {
  const shown = only ? groups.filter((g) => g.items.some((item) => only.has(item.id))) : groups;
  $("#r-filter").hidden = !only;
  if (only) {
    $("#r-filter").replaceChildren("Showing one cluster. ",
      h("button", { type: "button", class: "link", onclick: () => { only = null; renderGroups(); } }, "Show all"));
  }
  const list = $("#r-groups");
  if (!shown.length) {
    list.replaceChildren(h("li", { class: "muted" }, "Nothing flagged here: searches that score low show up here."));
    return;
  }
  list.replaceChildren(...shown.map((group) => h("li", {},
    h("button", { type: "button", class: "group", "aria-pressed": String(group === selected),
                  onclick: () => select(group) },
      h("span", { class: "q" }, group.query),
      h("span", { class: "muted small" },
        `${group.items.length > 1 ? `${group.items.length}× · ` : ""}best ${score(group.best)} · `,
        session.keyType === "admin" ? `${group.tenant} · ` : "",
        group.labelled ? "labelled" : "to label")))));
}

async function loadClusters(state) {
  const list = $("#r-clusters");
  list.replaceChildren(h("li", { class: "muted" }, "Grouping the flagged queries…"));
  try {
    const answer = await api(`/v1/review/clusters?${query({ state: state || "all" })}`);
    const all = [...answer.clusters, ...(answer.unclustered ? [answer.unclustered] : [])];
    if (!all.length) { list.replaceChildren(h("li", { class: "muted" }, "No clusters yet.")); return; }
    list.replaceChildren(...all.map((cluster) => h("li", { class: "cluster" },
      h("div", {}, h("strong", {}, cluster.id ? `Cluster ${cluster.id}` : "Unclustered"),
        ` · ${cluster.size} search${cluster.size === 1 ? "" : "es"} · ${Math.round(cluster.labelled_share * 100)}% labelled` +
        ` · mean best ${score(cluster.mean_best)}`),
      h("ul", { class: "typical", "aria-label": "typical queries" }, cluster.typical.map((q) => h("li", {}, q))),
      h("button", { type: "button", class: "link", onclick: () => { only = new Set(cluster.item_ids); renderGroups(); } },
        `Show ${cluster.id ? `cluster ${cluster.id}` : "these"}`))));
  } catch (err) {
    list.replaceChildren(h("li", { class: "muted" }, `Clusters unavailable: ${err.message}`));
  }
}

function select(group) {
  selected = group;
  const label = group.latest.label;
  const positives = new Set(label ? label.positives : []);
  chosen = new Set(group.latest.candidates.map((c, i) => (positives.has(c.chunk_id) ? i : -1)).filter((i) => i >= 0));
  noneAnswers = Boolean(label && !label.positives.length);
  renderGroups();
  renderDetail();
  $("#r-detail").focus();
}

function toggle(index) {
  if (chosen.has(index)) chosen.delete(index); else chosen.add(index);
  noneAnswers = false;
  renderDetail(index);
}

function keys(event) {
  if (!selected || event.target.matches("input[type=text], textarea, select")) return;
  if (/^[0-9]$/.test(event.key)) {
    const n = Number(event.key);
    if (n === 0) { noneAnswers = !noneAnswers; chosen.clear(); renderDetail(); }
    else if (n <= selected.latest.candidates.length) toggle(n - 1);
    event.preventDefault();
  } else if (event.key === "Enter" && !event.target.matches("button, a")) {
    event.preventDefault();
    save();
  }
}

function renderDetail(focusIndex = null) {
  const panel = $("#r-detail");
  if (!selected) { panel.replaceChildren(h("p", { class: "muted" }, "Choose a flagged search to label it.")); return; }
  const item = selected.latest;
  const [minBest, minSpread] = item.rule;
  panel.replaceChildren(
    h("h2", {}, `“${item.query}”`),
    h("p", { class: "muted small" },
      `Flagged ${selected.items.length} time${selected.items.length === 1 ? "" : "s"}, last ${when(item.created_at)}. ` +
      `Best score ${score(item.best)} (below ${minBest}) and spread ${score(item.spread)} (below ${minSpread}) under ` +
      `the "${item.backend}" rule · ${item.reranker}` + (item.instruction ? ` · instruction: ${item.instruction}` : "")),
    h("p", {}, "Which passages answer it?"),
    h("ol", { class: "candidates" }, item.candidates.map((c, i) => h("li", { class: chosen.has(i) ? "yes" : null },
      h("label", {},
        h("input", { type: "checkbox", checked: chosen.has(i), onchange: () => toggle(i), dataset: { index: String(i) } }),
        h("kbd", { "aria-hidden": "true" }, String(i + 1)),
        h("span", { class: "doc" }, c.document_id),
        h("span", { class: "muted small" }, ` score ${score(c.rerank_score ?? c.score)}`)),
      h("p", { class: "passage" }, c.text)))),
    h("div", { class: "row" },
      h("label", { class: "check" }, h("input", { type: "checkbox", checked: noneAnswers, id: "r-none",
          onchange: (e) => { noneAnswers = e.target.checked; if (noneAnswers) chosen.clear(); renderDetail(); } }),
        " None of them answers ", h("kbd", {}, "0")),
      h("button", { type: "button", class: "primary", onclick: save }, "Save label ", h("kbd", {}, "Enter")),
      selected.labelled ? h("span", { class: "badge ok" }, "labelled") : null));
  if (focusIndex !== null) panel.querySelector(`input[data-index="${focusIndex}"]`)?.focus();
}

async function save() {
  const msg = $("#r-msg");
  if (!chosen.size && !noneAnswers) {
    announce("Mark the passages that answer (1–9), or none (0), before saving", msg, "warn");
    return;
  }
  const chunkIds = [...chosen].map((i) => selected.latest.candidates[i].chunk_id);
  let saved = 0;
  let skipped = 0;
  try {
    for (const item of selected.items) {
      const own = chunkIds.filter((id) => item.candidates.some((c) => c.chunk_id === id));
      if (!noneAnswers && !own.length) { skipped++; continue; } // its candidates differ: label it on its own
      await api(`/v1/review/${encodeURIComponent(item.id)}`, { method: "POST",
        json: noneAnswers ? { none: true } : { chunk_ids: own } });
      saved++;
    }
  } catch (err) {
    announce(`Could not save the label: ${err.message}`, msg, "error");
    return;
  }
  const what = noneAnswers ? "no passage answers" : `${chunkIds.length} passage${chunkIds.length === 1 ? "" : "s"} answer`;
  announce(`Saved for “${selected.query}”: ${what} (${saved} search${saved === 1 ? "" : "es"} labelled` +
           (skipped ? `, ${skipped} with other passages left to label` : "") + ")", msg, "ok");
  const index = groups.indexOf(selected);
  await load();
  const next = groups.slice(Math.max(0, index)).find((g) => !g.labelled) || null;
  if (next) select(next);
}

async function exportLabels() {
  const msg = $("#r-msg");
  try {
    const text = await api(`/v1/review/export?${query({})}`, { text: true });
    const lines = text.split("\n").filter(Boolean).length;
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
    const link = h("a", { href: url, download: "review-pairs.jsonl", hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    announce(`Exported ${lines} training pair${lines === 1 ? "" : "s"} to review-pairs.jsonl`, msg, "ok");
  } catch (err) {
    announce(`Export failed: ${err.message}`, msg, "error");
  }
}
