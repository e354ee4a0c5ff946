// Documents: the tenant's documents with their served and pending versions; delete; upload a new version.
import { $, announce, api, h, metadataChips, short } from "./lib.js";

let docs = [];
let wired = false;
let versionFor = null;      // the document a chosen file becomes the new version of
let refresher = null;       // while a version is pending, the list refreshes itself
let jobs = new Map();       // document id -> job of a new version or a delete in flight

export function show() {
  if (!wired) wire();
  load();
}

export function hide() { stop(); }

function stop() { if (refresher) { clearInterval(refresher); refresher = null; } }

function wire() {
  wired = true;
  $("#doc-filter").addEventListener("input", render);
  $("#doc-refresh").addEventListener("click", load);
  $("#version-input").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file && versionFor) await newVersion(versionFor, file);
  });
}

async function load() {
  const msg = $("#doc-msg");
  try {
    docs = await api("/v1/documents");
    docs.sort((a, b) => a.document_id.localeCompare(b.document_id));
    render();
    $("#doc-count").textContent = `${docs.length} document${docs.length === 1 ? "" : "s"}`;
  } catch (err) {
    announce(`Could not list documents: ${err.message}`, msg, "error");
  }
  stop();
  if (docs.some((d) => d.pending_version) || jobs.size) refresher = setInterval(poll, 1500);
}

async function poll() {
  for (const [id, job] of jobs) {
    try {
      const now = await api(`/v1/jobs/${encodeURIComponent(job.job_id)}`);
      if (now.state === "done" || now.state === "failed") {
        jobs.delete(id);
        const what = now.kind === "delete" ? "deleted" : "new version indexed";
        announce(now.state === "done" ? `${id}: ${what}` : `${id}: ${now.kind} failed: ${now.error}`, $("#doc-msg"),
                 now.state === "done" ? "ok" : "error");
      } else {
        jobs.set(id, now);
      }
    } catch { jobs.delete(id); }
  }
  await load();
}

async function newVersion(doc, file) {
  const form = new FormData();
  form.append("files", file, file.name);
  form.append("document_id", doc.document_id);
  form.append("metadata", JSON.stringify(doc.metadata || {}));
  try {
    const answer = await api("/v1/documents", { method: "POST", form });
    const job = answer.jobs[0];
    jobs.set(doc.document_id, job);
    announce(`${file.name} sent as a new version of ${doc.document_id}: ${job.state}`, $("#doc-msg"));
  } catch (err) {
    announce(`New version of ${doc.document_id} refused: ${err.message}`, $("#doc-msg"), "error");
  }
  load();
}

async function remove(doc) {
  if (!confirm(`Delete ${doc.document_id}? It disappears from search at once.`)) return;
  try {
    const job = await api(`/v1/documents/${encodeURIComponent(doc.document_id)}`, { method: "DELETE" });
    jobs.set(doc.document_id, job);
    announce(`${doc.document_id} deleted; its passages are being removed`, $("#doc-msg"), "ok");
  } catch (err) {
    announce(`Could not delete ${doc.document_id}: ${err.message}`, $("#doc-msg"), "error");
  }
  load();
}

function render() {
  const needle = $("#doc-filter").value.trim().toLowerCase();
  const shown = docs.filter((d) => !needle || d.document_id.toLowerCase().includes(needle)
    || d.filename.toLowerCase().includes(needle));
  const rows = shown.map((doc) => {
    const job = jobs.get(doc.document_id);
    const pending = doc.pending_version
      ? h("span", { class: "badge info", title: "indexed beside the served version; search switches to it when complete" },
          `${short(doc.pending_version)} indexing${job && job.chunks_total ? ` ${job.chunks_done}/${job.chunks_total}` : ""}`)
      : h("span", { class: "muted" }, "none");
    return h("tr", {},
      h("th", { scope: "row", "data-label": "Document" }, h("span", { class: "name" }, doc.document_id),
        doc.filename !== doc.document_id ? h("div", { class: "muted small" }, doc.filename) : null),
      h("td", { "data-label": "Served version" }, h("code", { title: doc.version }, short(doc.version))),
      h("td", { "data-label": "Passages" }, String(doc.chunks)),
      h("td", { "data-label": "Pending version" }, pending),
      h("td", { "data-label": "Metadata" }, metadataChips(doc.metadata)),
      h("td", { class: "actions", "data-label": "Actions" },
        h("button", { type: "button", onclick: () => { versionFor = doc; $("#version-input").click(); },
                      "aria-label": `Upload a new version of ${doc.document_id}` }, "New version…"),
        h("button", { type: "button", class: "danger", onclick: () => remove(doc),
                      "aria-label": `Delete ${doc.document_id}` }, "Delete")));
  });
  if (!rows.length) {
    rows.push(h("tr", {}, h("td", { colspan: "6", class: "muted" },
      docs.length ? "No document matches the filter." : "No documents yet: upload some on the Upload view.")));
  }
  $("#doc-rows").replaceChildren(...rows);
}
