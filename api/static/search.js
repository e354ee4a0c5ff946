// Search: one query through both stages, each hit's stage-1 rank and score beside its reranked rank and score.
import { $, announce, api, badge, h, metadataChips, ms, score, session, short } from "./lib.js";

let wired = false;

export function show() {
  if (!wired) wire();
  $("#q").focus();
  return "focused"; // the query box, not the heading: the next thing a person does is type
}

export function hide() {}

function wire() {
  wired = true;
  $("#search-form").addEventListener("submit", (event) => { event.preventDefault(); run(); });
}

async function run() {
  const summary = $("#s-summary");
  const list = $("#s-hits");
  const body = { query: $("#q").value };
  const topK = parseInt($("#s-topk").value, 10);
  if (topK) body.top_k = topK;
  if ($("#s-mode").value) body.mode = $("#s-mode").value;
  if ($("#s-instruction").value.trim()) body.instruction = $("#s-instruction").value.trim();
  summary.replaceChildren(h("span", { class: "muted" }, "Searching…"));
  list.setAttribute("aria-busy", "true");
  try {
    const result = await api("/v1/search", { method: "POST", json: body });
    render(result);
    announce(`${result.hits.length} result${result.hits.length === 1 ? "" : "s"}`);
  } catch (err) {
    list.replaceChildren();
    summary.replaceChildren(h("p", { class: "msg", "data-kind": "error" }, `Search failed: ${err.message}`));
  } finally {
    list.removeAttribute("aria-busy");
  }
}

// -- what the scores mean -----------------------------------------------------------------------------------
const COSINE = "cosine similarity of the query's and the passage's embeddings, from -1 to 1: near 1 the same " +
  "meaning, above about 0.3 related (MiniLM), near 0 unrelated";

const FUSED = {
  zscore: "each list's scores standardised (minus the list's mean, over its spread) and added: 0 is an " +
    "average candidate, each 1 one spread better in one list; a passage one list did not find takes that " +
    "list's lowest.",
  rrf: "fused by reciprocal rank, each list adding 1/(60 + rank): 0.033 means first in both lists.",
  weighted: "each list's scores scaled from 0 (its last) to 1 (its first) and added: 2 means first in both.",
};

function stage1Tip(mode, hit, fusion) {
  const dense = hit.dense_score !== null && hit.dense_score !== undefined
    ? ` Its ${COSINE.split(",")[0]} is ${score(hit.dense_score)}.` : "";
  if (mode === "dense") return `Stage 1 (dense): the ${COSINE}.`;
  if (mode === "bm25") {
    return "Stage 1 (BM25): word-match score, higher when the passage holds more of the query's words, rare " +
      "words counting most. It has no fixed scale: compare it only within one search.";
  }
  return "Stage 1 (hybrid): the dense (embedding) and BM25 (word) lists, " + (FUSED[fusion] || "fused.") +
    " Compare it only within one search." + dense;
}

function rerankTip(backend, note) {
  const kind = backend.split(":")[0];
  let text = "The rerank stage's score, from reading the query and the passage together.";
  if (kind.startsWith("qwen3")) {
    text = "P(yes): the Qwen3 reranker's probability, from 0 to 1, that the passage answers the query, " +
      "judged from the query and the passage read together. 0.9 is a confident yes, 0.1 a confident no.";
  } else if (kind === "cross-encoder") {
    text = "The cross-encoder's relevance, from 0 to 1 (a sigmoid), judged from the query and the passage read " +
      "together: above 0.5 it takes the passage for relevant.";
  } else if (kind === "remote") {
    text = "The score of the remote rerank server's model, from reading the query and the passage together.";
  }
  return note ? `${text} Order: ${note}.` : text;
}

/** The review queue's low-confidence rule (API_REVIEW_RULES) applied to this answer, as the service does. */
function lowConfidence(result) {
  const hits = result.hits;
  const rules = session.rules || {};
  if (!hits.length) return null;
  let scores, backend;
  if (result.rerank.applied && !result.degraded) {
    scores = hits.map((x) => x.rerank_score ?? x.score);
    backend = result.rerank.backend.split(":")[0];
  } else if (hits.some((x) => x.dense_score !== null && x.dense_score !== undefined)) {
    scores = hits.filter((x) => x.dense_score !== null && x.dense_score !== undefined).map((x) => x.dense_score);
    backend = "none";
  } else {
    if (!("bm25" in rules)) return null;
    scores = hits.map((x) => x.score);
    backend = "bm25";
  }
  const rule = rules[backend] || rules["*"];
  if (!rule) return null;
  const best = Math.max(...scores);
  const spread = best - Math.min(...scores);
  return best < rule[0] && spread < rule[1] ? { best, spread, rule, backend } : null;
}

const STAGES = { embed: "embed query", stage1: "stage 1", filter: "version filter", rerank: "rerank",
                 cache: "cache lookup", total: "total" };

function render(result) {
  const applied = result.rerank.applied;
  const low = lowConfidence(result);
  const fused = applied && result.rerank.note.startsWith("final score");
  const parts = [
    h("p", { class: "line" },
      h("strong", {}, `${result.hits.length} result${result.hits.length === 1 ? "" : "s"}`),
      ` from ${result.candidates} candidate${result.candidates === 1 ? "" : "s"} · stage 1: ${result.mode} · `,
      applied ? `reranked by ${result.rerank.backend}` : h("span", {}, "stage 1 only: ", result.rerank.note)),
    h("p", { class: "badges" },
      result.degraded ? badge("degraded", "bad", `Answered in stage-1 order: ${result.degraded_reason}`) : null,
      result.cached ? badge("cached", "info", "Served from the result cache: computed earlier for the same " +
        "query, options and index. The timings are the cache lookup's.") : null,
      low ? badge("low confidence", "warn", `Best score ${score(low.best)} is below ${low.rule[0]} and the ` +
        `spread ${score(low.spread)} below ${low.rule[1]} (the "${low.backend}" rule, API_REVIEW_RULES): ` +
        "nothing scored well, nothing stood out. Such a search goes to the review queue.") : null,
      applied ? badge("2 stages", "ok", "Stage 1 found the candidates; the rerank stage reordered them.") : null),
    h("ul", { class: "timings", "aria-label": "time per stage" },
      Object.entries(result.timings_ms).map(([k, v]) =>
        h("li", { class: k === "total" ? "total" : null }, h("span", { class: "muted" }, STAGES[k] || k), " ", ms(v)))),
  ];
  $("#s-summary").replaceChildren(...parts);
  const list = $("#s-hits");
  if (!result.hits.length) {
    list.replaceChildren(h("li", { class: "muted empty" }, "Nothing found. Upload documents, or try other words."));
    return;
  }
  list.replaceChildren(...result.hits.map((hit, i) => renderHit(hit, i + 1, result, applied, fused)));
}

function movement(from, to) {
  if (!from) return null;
  const moved = from - to;
  if (moved > 0) return h("span", { class: "move up", "aria-label": `moved up ${moved}` }, `▲ ${moved}`);
  if (moved < 0) return h("span", { class: "move down", "aria-label": `moved down ${-moved}` }, `▼ ${-moved}`);
  return h("span", { class: "move same", "aria-label": "same place" }, "=");
}

function stageBox(label, rank, value, tip, extra) {
  return h("div", { class: "stage" },
    h("span", { class: "label" }, label),
    h("span", { class: "rank" }, rank ? `#${rank}` : "–"),
    h("span", { class: "score", tabindex: "0", title: tip, "data-tip": tip, "aria-label": `${label} score ${score(value)}. ${tip}` },
      score(value)),
    extra || null);
}

function renderHit(hit, rank, result, applied, fused) {
  const s1 = stageBox("Stage 1", hit.stage1_rank, hit.stage1_score, stage1Tip(result.mode, hit, result.stage1_fusion));
  const s2 = applied
    ? stageBox(fused ? "Final (fused)" : "Reranked", rank, fused ? hit.score : hit.rerank_score,
        rerankTip(result.rerank.backend, result.rerank.note),
        fused ? h("span", { class: "muted small" }, `rerank ${score(hit.rerank_score)}`) : null)
    : h("div", { class: "stage off" }, h("span", { class: "label" }, "Reranked"), h("span", { class: "muted" }, "not run"));
  return h("li", { class: "hit" },
    h("div", { class: "hit-head" },
      h("span", { class: "final", "aria-label": `result ${rank}` }, `${rank}`),
      h("span", { class: "doc" }, hit.document_id),
      hit.page ? h("span", { class: "page" }, `page ${hit.page}`) : null,
      h("code", { class: "muted small", title: `version ${hit.version}` }, short(hit.version))),
    h("div", { class: "stages" }, s1, applied ? movement(hit.stage1_rank, rank) : null, s2),
    h("p", { class: "passage" }, hit.text),
    Object.keys(hit.metadata || {}).length ? metadataChips(hit.metadata) : null);
}
