"""One query of ``sieve eval``: stage 1 once per mode, the reranker once per (query, passage).

``probe_query`` runs the query through the store in each stage-1 mode it needs (chunks become documents by
their best chunk, the first ``depth``; ``ranking`` also orders them by the sum of their top chunks' scores),
then has the reranker score the best chunk of each of the top
``rerank_depth`` documents of each rerank mode. A chunk already scored for this query (the modes' heads
overlap) is not sent again, so every configuration that reranks — ``+rerank``, ``+rerank+fusion``,
``+rerank+learned`` — reuses the same scores. ``rerank`` time per mode is the time that mode's head would take
alone: the measured time per pair of this query times the head's size. Hybrid follows the service's
per-query legs (``retrieval.fusion.plan_legs``: bm25 alone for a query in a language the embedder does not
read) unless ``options.language_fusion`` is off.

A probe can be extended: ``probe_query`` with ``probe=`` searches only the modes it lacks and reranks only
chunks not scored yet, and ``add`` puts in a ranking made from its legs (the stage-1 gate's learned
configuration, ``api.relevance.stage1_gate``), which then reranks and reports like a mode.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from api.gate_decision import Stage1
from api.relevance.eval_options import EvalOptions
from api.relevance.gate import QueryRun
from api.relevance.stage1_gate import QueryLegs
from reranking import Reranker
from retrieval import Embedder, VectorStore
from retrieval.embedder import reads
from retrieval.fusion import plan_legs
from retrieval.types import Candidate

TENANT = "eval"


def to_documents(candidates: Sequence[Candidate], depth: int) -> list[Candidate]:
    """One entry per document, its best chunk (candidates come best first), the first ``depth``."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        best.setdefault(candidate.document_id, candidate)
    return list(best.values())[:depth]


def summed_documents(candidates: Sequence[Candidate], depth: int, top: int) -> list[tuple[str, float]]:
    """(document id, sum of the scores of its best ``top`` chunks), best first (ties: the better best chunk
    first), the first ``depth``. A chunk the store did not return adds nothing."""
    sums: dict[str, list[float]] = {}
    for candidate in candidates:  # best first, so each document's first ``top`` are its best
        scores = sums.setdefault(candidate.document_id, [])
        if len(scores) < top:
            scores.append(candidate.score)
    ranked = sorted(sums.items(), key=lambda item: -sum(item[1]))  # stable: ties keep best-chunk order
    return [(doc, sum(scores)) for doc, scores in ranked[:depth]]


@dataclass
class QueryProbe:
    """What one query found: per mode the stage-1 documents and the rerank scores of their head."""

    embed_ms: float = 0.0
    vector: np.ndarray | None = None
    reads: bool = True  # hybrid runs both legs for this query (plan_legs); else bm25 alone
    found: dict[str, list[Candidate]] = field(default_factory=dict)  # mode -> the store's chunks
    docs: dict[str, list[Candidate]] = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)  # mode -> the mode the store ran (plan_legs)
    stage1_ms: dict[str, float] = field(default_factory=dict)
    rerank: dict[str, dict[int, float]] = field(default_factory=dict)  # mode -> head index -> score
    rerank_ms: dict[str, float] = field(default_factory=dict)
    scored: dict[str, float] = field(default_factory=dict)  # chunk id -> rerank score, this query's
    rerank_s: float = 0.0  # time spent reranking ``scored``

    def run(self, mode: str) -> QueryRun:
        docs = self.docs[mode]
        return QueryRun(
            [d.document_id for d in docs], [d.score for d in docs], dict(self.rerank.get(mode, {}))
        )

    def ranking(self, mode: str, aggregate: str, options: EvalOptions) -> list[str]:
        """Stage-1 document ids of ``mode``, by best chunk or (``sum``) by their top chunks' sum."""
        if aggregate == "best":
            return [d.document_id for d in self.docs[mode]]
        if aggregate == "sum":
            summed = summed_documents(self.found[mode], options.depth, options.aggregate_chunks)
            return [doc for doc, _ in summed]
        raise ValueError(f"unknown aggregation {aggregate!r}: use best or sum")

    def stage_ms(self, mode: str) -> dict[str, float]:
        """Per-stage milliseconds of stage 1 in ``mode`` (with the query's embedding where it needs one)."""
        stage = {"stage1": self.stage1_ms[mode]}
        if self.ran.get(mode, mode) != "bm25":
            stage["embed"] = self.embed_ms
        return stage

    def legs(self) -> QueryLegs:
        """The dense and bm25 chunks (probe both modes first), for the stage-1 gate."""
        return QueryLegs(self.found["dense"], self.found["bm25"], self.reads)

    def add(self, name: str, config: Stage1, depth: int) -> None:
        """``config``'s ranking of the legs as mode ``name``; its time is that of the mode it runs as."""
        legs = self.legs()
        chunks = legs.chunks(config)
        ran = "bm25" if config.mode == "hybrid" and not legs.reads else config.mode
        self.found[name] = chunks
        self.docs[name] = to_documents(chunks, depth)
        self.ran[name] = ran
        self.stage1_ms[name] = self.stage1_ms.get(ran) or sum(
            self.stage1_ms.get(m, 0.0) for m in ("dense", "bm25")
        )


def probe_query(
    query: str,
    *,
    modes: Sequence[str],
    rerank_modes: Sequence[str],
    store: VectorStore,
    embedder: Embedder,
    reranker: Reranker | None,
    options: EvalOptions,
    probe: QueryProbe | None = None,
) -> QueryProbe:
    probe = probe if probe is not None else QueryProbe()
    missing = [mode for mode in modes if mode not in probe.docs]
    if probe.vector is None and any(mode != "bm25" for mode in missing):
        started = time.perf_counter()
        probe.vector = embedder.embed_queries([query])[0]
        probe.embed_ms = (time.perf_counter() - started) * 1000
    languages = reads(embedder)
    probe.reads = not options.language_fusion or plan_legs("hybrid", query, languages).mode == "hybrid"
    for mode in missing:
        started = time.perf_counter()
        ran = plan_legs(mode, query, languages).mode if options.language_fusion else mode
        found = store.search(
            TENANT,
            None if ran == "bm25" else probe.vector,
            limit=2 * options.depth,
            mode=ran,
            query_text=query,
            fusion=options.fusion,
            rrf_k=options.rrf_k,
            weights=options.weights,
        )
        probe.stage1_ms[mode] = (time.perf_counter() - started) * 1000
        probe.found[mode] = found
        probe.docs[mode] = to_documents(found, options.depth)
        probe.ran[mode] = ran
    if reranker is None or not reranker.reorders:
        return probe
    scores = probe.scored  # chunk id -> rerank score, for this query
    for mode in rerank_modes:
        head = probe.docs[mode][: options.rerank_depth]
        new = [c for c in head if c.id not in scores]
        if new:
            started = time.perf_counter()
            hits = reranker.rank(query, [c.text for c in new])
            probe.rerank_s += time.perf_counter() - started
            scores.update({new[hit.index].id: hit.score for hit in hits})
        probe.rerank[mode] = {i: scores[c.id] for i, c in enumerate(head) if c.id in scores}
        pairs = len(scores)
        probe.rerank_ms[mode] = probe.rerank_s / pairs * len(head) * 1000 if pairs else 0.0
    return probe
