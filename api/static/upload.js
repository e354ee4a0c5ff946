// Upload: pick or drop files and folders, send them in batches, follow each file's job until done or failed.
import { $, ApiError, announce, api, bytes, h, pool } from "./lib.js";

const BATCH_FILES = 20;          // files per request (the service takes up to 100)
const POLL_MS = 1000;
const TERMINAL = new Set(["done", "failed", "refused"]);
let rows = [];                   // {file, name, size, state, done, total, error, jobId, documentId, tr}
let maxBytes = 0;                // API_MAX_REQUEST_BYTES from /info (0: unknown)
let polling = null;
let wired = false;

export function show() {
  if (!wired) wire();
  if (!maxBytes) api("/info").then((info) => { maxBytes = info.limits?.max_request_bytes || 0; }).catch(() => {});
}

export function hide() { /* jobs are followed in the background: the list is here when you come back */ }

function wire() {
  wired = true;
  const fileInput = $("#file-input");
  const folderInput = $("#folder-input");
  $("#pick-files").addEventListener("click", () => fileInput.click());
  $("#pick-folder").addEventListener("click", () => folderInput.click());
  for (const input of [fileInput, folderInput]) {
    input.addEventListener("change", () => { stage([...input.files]); input.value = ""; });
  }
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    stage(await droppedFiles(e.dataTransfer));
  });
  $("#up-send").addEventListener("click", send);
  $("#up-clear").addEventListener("click", () => {
    rows = rows.filter((r) => !TERMINAL.has(r.state));
    render();
  });
}

/** Files of a drop, folders walked recursively (webkitGetAsEntry); plain files where entries are missing. */
async function droppedFiles(transfer) {
  const entries = [...(transfer.items || [])].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files];
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return files;
}

function stage(files) {
  for (const file of files) {
    if (file.name.startsWith(".")) continue; // .DS_Store and the like, from folders
    rows.push({ file, name: file.webkitRelativePath || file.name, size: file.size, state: "ready",
                done: 0, total: 0, error: "", jobId: null, documentId: "" });
  }
  render();
  const ready = rows.filter((r) => r.state === "ready").length;
  announce(`${ready} file${ready === 1 ? "" : "s"} ready to upload`, $("#up-msg"));
}

function options() {
  const raw = $("#up-meta").value.trim();
  let metadata = null;
  if (raw) {
    try { metadata = JSON.parse(raw); } catch (err) { throw new Error(`Metadata is not valid JSON: ${err.message}`); }
    if (typeof metadata !== "object" || Array.isArray(metadata) || metadata === null) {
      throw new Error("Metadata must be a JSON object, like {\"team\": \"support\"}");
    }
  }
  const documentId = $("#up-id").value.trim();
  return { metadata, documentId };
}

/** Files in requests of at most BATCH_FILES files and (when known) about the request size limit. */
function batches(ready) {
  const out = [];
  let batch = [], size = 0;
  const budget = maxBytes ? maxBytes * 0.9 : Infinity;
  for (const row of ready) {
    if (batch.length && (batch.length >= BATCH_FILES || size + row.size > budget)) { out.push(batch); batch = []; size = 0; }
    batch.push(row);
    size += row.size;
  }
  if (batch.length) out.push(batch);
  return out;
}

async function send() {
  const msg = $("#up-msg");
  const ready = rows.filter((r) => r.state === "ready");
  if (!ready.length) return;
  let opts;
  try {
    opts = options();
    if (opts.documentId && ready.length !== 1) throw new Error("A document id needs exactly one file; clear it or upload one file");
  } catch (err) {
    announce(err.message, msg, "error");
    return;
  }
  $("#up-send").disabled = true;
  for (const row of ready) row.state = "sending";
  render();
  for (const batch of batches(ready)) {
    const form = new FormData();
    for (const row of batch) form.append("files", row.file, row.file.name);
    if (opts.metadata) form.append("metadata", JSON.stringify(opts.metadata));
    if (opts.documentId) form.append("document_id", opts.documentId);
    try {
      const answer = await api("/v1/documents", { method: "POST", form });
      accept(batch, answer);
    } catch (err) {
      refuseAll(batch, err);
    }
    render();
  }
  const refused = ready.filter((r) => r.state === "refused").length;
  announce(`${ready.length - refused} file(s) accepted` + (refused ? `, ${refused} refused (reasons in the list)` : ""),
           msg, refused ? "warn" : "info");
  follow();
}

function accept(batch, answer) {
  const waiting = [...batch];
  for (const job of answer.jobs) {
    const i = waiting.findIndex((r) => r.file.name === job.filename);
    const row = waiting.splice(i >= 0 ? i : 0, 1)[0];
    Object.assign(row, { jobId: job.job_id, documentId: job.document_id });
    update(row, job);
  }
  for (const refused of answer.rejected) {
    const i = waiting.findIndex((r) => r.file.name === refused.filename);
    const row = waiting.splice(i >= 0 ? i : 0, 1)[0];
    Object.assign(row, { state: "refused", error: `${refused.error} (${refused.status})` });
  }
}

function refuseAll(batch, err) {
  // Every file of the request was refused: the message names each file ("a.exe: reason; b.bin: reason").
  const status = err instanceof ApiError && err.status ? ` (${err.status})` : "";
  for (const row of batch) {
    const own = err.message.split("; ").find((part) => part.startsWith(`${row.file.name}: `));
    row.state = "refused";
    row.error = (own ? own.slice(row.file.name.length + 2) : err.message) + status;
  }
}

function update(row, job) {
  row.state = job.state;
  row.done = job.chunks_done;
  row.total = job.chunks_total;
  row.error = job.error || "";
}

function follow() {
  if (polling) return;
  polling = setInterval(async () => {
    const open = rows.filter((r) => r.jobId && !TERMINAL.has(r.state));
    if (!open.length) { clearInterval(polling); polling = null; return; }
    await pool(open, 6, async (row) => {
      try { update(row, await api(`/v1/jobs/${encodeURIComponent(row.jobId)}`)); } catch (err) {
        if (err.status === 404) Object.assign(row, { state: "failed", error: err.message });
      }
    });
    render();
    if (open.every((r) => TERMINAL.has(r.state))) {
      const failed = open.filter((r) => r.state === "failed").length;
      announce(failed ? `Indexing finished; ${failed} file(s) failed` : "Indexing finished: every file is searchable",
               $("#up-msg"), failed ? "warn" : "ok");
    }
  }, POLL_MS);
}

const LABELS = { ready: "ready", sending: "sending", queued: "queued", running: "indexing", done: "done",
                 failed: "failed", refused: "refused" };

function progress(row) {
  if (row.state === "refused" || row.state === "failed") return h("span", { class: "reason" }, row.error || "no reason given");
  if (row.state === "done") return h("span", {}, `${row.total} passage${row.total === 1 ? "" : "s"} indexed`);
  if (row.state === "running" && row.total) {
    return h("span", { class: "bar-wrap" },
      h("progress", { max: row.total, value: row.done, "aria-label": `${row.name}: ${row.done} of ${row.total} passages` }),
      h("span", {}, `${row.done} / ${row.total}`));
  }
  const waiting = { sending: "sending…", queued: "waiting for a worker", running: "reading the file…" };
  return h("span", { class: "waiting" }, waiting[row.state] || row.state);
}

function render() {
  const body = $("#up-rows");
  body.replaceChildren(...rows.map((row) => h("tr", { dataset: { state: row.state } },
    h("td", { class: "name", "data-label": "File" }, row.name),
    h("td", { "data-label": "Size" }, bytes(row.size)),
    h("td", { "data-label": "State" }, h("span", { class: `state ${row.state}` }, LABELS[row.state] || row.state)),
    h("td", { class: "progress", "data-label": "Progress" }, row.state === "ready" ? "" : progress(row)),
    h("td", { "data-label": "Document" }, row.documentId || "–"))));
  $("#up-table").hidden = rows.length === 0;
  $("#up-send").disabled = !rows.some((r) => r.state === "ready");
  const ready = rows.filter((r) => r.state === "ready").length;
  $("#up-send").textContent = ready ? `Upload ${ready} file${ready === 1 ? "" : "s"}` : "Upload";
  $("#up-clear").disabled = !rows.some((r) => TERMINAL.has(r.state));
}
