"""``sieve eval``: measure retrieval configurations on a BEIR-layout folder (see ``api.beir``).

1. Index: every document (title, blank line, text) is chunked like an ingested file (``ingestion.chunking``,
   by the embedder's tokenizer, ``INGEST_CHUNK_TOKENS`` / ``INGEST_CHUNK_OVERLAP`` capped by the embedder),
   embedded with the configured embedder and written to a collection of its own (``sieve_eval_<random>``,
   tenant ``eval``), dropped afterwards unless kept.
2. Search: each query runs through every configuration. Stage 1 asks the store for ``2 × depth`` chunks in the
   configuration's mode (``bm25``, ``dense``, ``hybrid``); chunks become documents by their best chunk (a
   document's score is its best chunk's), keeping the first ``depth`` (100) documents.
3. Rerank (where ``RERANK_BACKEND`` is not ``none``): the configured reranker scores the best chunk of each of
   the top ``rerank_depth`` documents; ``+rerank`` orders them by its score, ``+rerank+fusion`` by
   ``retrieval.fusion.fuse_rerank`` of the stage-1 and rerank ranks (RRF, or ``weighted`` interpolation).
   Documents below ``rerank_depth`` keep their stage-1 order after them, so recall@100 stays comparable.
4. Report: ``api.eval_report`` (ir-measures, paired t-test against the first configuration, Markdown, JSON
   and a chart) with per-stage timings per query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api import eval_report
from api.beir import EVAL_MODULUS, BeirDataset
from ingestion.chunking import chunk_sections
from ingestion.parsers import Section
from reranking import Reranker
from retrieval import Chunk, Embedder, VectorStore
from retrieval.fusion import SEARCH_MODES, fuse_rerank
from retrieval.types import Candidate

TENANT = "eval"


@dataclass(frozen=True)
class EvalConfig:
    name: str
    mode: str  # dense | bm25 | hybrid
    rerank: bool = False
    fuse: bool = False  # fuse stage-1 and rerank ranks instead of taking the rerank order


@dataclass
class EvalOptions:
    modes: tuple[str, ...] = ("bm25", "dense", "hybrid")
    depth: int = 100
    rerank_depth: int = 50
    fusion: str = "rrf"  # of the hybrid legs
    rrf_k: int = 60
    weights: tuple[float, float] | None = None  # (dense, bm25)
    rerank_fusion: str = "rrf"  # of stage 1 and rerank
    rerank_weights: tuple[float, float] | None = None  # (stage1, rerank)
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    batch: int = 64
    notes: list[str] = field(default_factory=list)


def configurations(options: EvalOptions, reranker: Reranker | None) -> list[EvalConfig]:
    unknown = [mode for mode in options.modes if mode not in SEARCH_MODES]
    if unknown or not options.modes:
        raise ValueError(f"unknown search modes {unknown}: use some of {', '.join(SEARCH_MODES)}")
    configs = [EvalConfig(mode, mode) for mode in options.modes]
    if reranker is not None and reranker.reorders:
        configs += [EvalConfig(f"{mode}+rerank", mode, rerank=True) for mode in options.modes]
        configs += [
            EvalConfig(f"{mode}+rerank+fusion", mode, rerank=True, fuse=True) for mode in options.modes
        ]
    return configs


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def build_index(
    dataset: BeirDataset, store: VectorStore, embedder: Embedder, options: EvalOptions, console: Console
) -> dict[str, Any]:
    """Chunk, embed and write the corpus; returns counts and the time of each step."""
    budget = max(8, min(options.chunk_tokens, embedder.max_tokens))
    overlap = min(options.chunk_overlap, budget // 4)
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    timing = {"chunk_s": 0.0, "embed_s": 0.0, "upsert_s": 0.0}
    pending: list[Chunk] = []

    def flush() -> None:
        started = time.perf_counter()
        vectors = embedder.embed_documents([chunk.text for chunk in pending])
        timing["embed_s"] += time.perf_counter() - started
        started = time.perf_counter()
        store.upsert(pending, vectors)
        timing["upsert_s"] += time.perf_counter() - started
        pending.clear()

    chunks = 0
    with _progress(console) as bar:
        task = bar.add_task("indexing documents", total=len(dataset.corpus))
        for doc_id in dataset.corpus:
            started = time.perf_counter()
            pieces = chunk_sections(
                [Section(dataset.document_text(doc_id))],
                count_tokens=embedder.count_tokens,
                chunk_tokens=budget,
                overlap_tokens=overlap,
            )
            timing["chunk_s"] += time.perf_counter() - started
            pending += [
                Chunk(tenant=TENANT, document_id=doc_id, version="eval", position=p.position, text=p.text)
                for p in pieces
            ]
            chunks += len(pieces)
            if len(pending) >= options.batch:
                flush()
            bar.advance(task)
        if pending:
            flush()
    return {
        "documents": len(dataset.corpus),
        "chunks": chunks,
        "chunk_tokens": budget,
        "overlap": overlap,
        **timing,
    }


def to_documents(candidates: Sequence[Candidate], depth: int) -> list[Candidate]:
    """One entry per document, its best chunk (candidates come best first), the first ``depth``."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        best.setdefault(candidate.document_id, candidate)
    return list(best.values())[:depth]


def rerank_order(
    query: str, docs: Sequence[Candidate], reranker: Reranker, *, depth: int, fuse: bool, options: EvalOptions
) -> tuple[list[Candidate], float, float]:
    """``docs`` with the top ``depth`` reordered by the reranker (or fused with stage 1).

    Returns (order, seconds reranking, seconds fusing)."""
    head, tail = list(docs[:depth]), list(docs[depth:])
    if not head:
        return list(docs), 0.0, 0.0
    started = time.perf_counter()
    hits = reranker.rank(query, [doc.text for doc in head])
    rerank_s = time.perf_counter() - started
    started = time.perf_counter()
    if fuse:
        fused = fuse_rerank(
            [doc.score for doc in head],
            {hit.index: hit.score for hit in hits},
            fusion=options.rerank_fusion,
            rrf_k=options.rrf_k,
            weights=options.rerank_weights,
        )
        order = [index for index, _ in fused]
    else:
        order = [hit.index for hit in hits]
        seen = set(order)
        order += [i for i in range(len(head)) if i not in seen]
    fusion_s = time.perf_counter() - started
    return [head[i] for i in order] + tail, rerank_s, fusion_s


def run_queries(
    dataset: BeirDataset,
    store: VectorStore,
    embedder: Embedder,
    reranker: Reranker | None,
    configs: Sequence[EvalConfig],
    options: EvalOptions,
    console: Console,
) -> dict[str, tuple[dict[str, list[str]], dict[str, list[float]]]]:
    """Per configuration: (query id -> ranked document ids, stage -> per-query milliseconds)."""
    results = {c.name: ({}, {}) for c in configs}  # type: dict[str, tuple[dict[str, list[str]], dict[str, list[float]]]]
    with _progress(console) as bar:
        task = bar.add_task("running queries", total=len(dataset.queries))
        for qid, query in dataset.queries.items():
            vector: np.ndarray | None = None
            embed_ms = 0.0
            if any(c.mode != "bm25" for c in configs):
                started = time.perf_counter()
                vector = embedder.embed_queries([query])[0]
                embed_ms = (time.perf_counter() - started) * 1000
            for config in configs:
                ranking, timings = results[config.name]
                started = time.perf_counter()
                found = store.search(
                    TENANT,
                    None if config.mode == "bm25" else vector,
                    limit=2 * options.depth,
                    mode=config.mode,
                    query_text=query,
                    fusion=options.fusion,
                    rrf_k=options.rrf_k,
                    weights=options.weights,
                )
                stage = {"stage1": (time.perf_counter() - started) * 1000}
                if config.mode != "bm25":
                    stage["embed"] = embed_ms
                docs = to_documents(found, options.depth)
                if config.rerank and reranker is not None:
                    docs, rerank_s, fusion_s = rerank_order(
                        query, docs, reranker, depth=options.rerank_depth, fuse=config.fuse, options=options
                    )
                    stage["rerank"] = rerank_s * 1000
                    if config.fuse:
                        stage["fusion"] = fusion_s * 1000
                stage["total"] = sum(stage.values())
                ranking[qid] = [doc.document_id for doc in docs]
                for name, ms in stage.items():
                    timings.setdefault(name, []).append(ms)
            bar.advance(task)
    return results


def evaluate(
    dataset: BeirDataset,
    out: Path,
    *,
    store: VectorStore,
    embedder: Embedder,
    reranker: Reranker | None,
    options: EvalOptions | None = None,
    console: Console | None = None,
    store_label: str = "",
    command: str = "",
) -> dict[str, Any]:
    """Index ``dataset``, run every configuration, write the report (``api.eval_report``) to ``out``."""
    options = options or EvalOptions()
    console = console or Console(stderr=True)
    configs = configurations(options, reranker)
    notes = list(options.notes)
    if reranker is None or not reranker.reorders:
        notes.append(
            "no rerank stage configured (RERANK_BACKEND=none): the +rerank configurations were skipped"
        )
    embedder.warm_up()
    if reranker is not None:
        reranker.warm_up()
    index = build_index(dataset, store, embedder, options, console)
    results = run_queries(dataset, store, embedder, reranker, configs, options, console)
    rows = []
    baseline: list[float] = []
    for config in configs:
        rankings, timings = results[config.name]
        means, per_query = eval_report.score_run(dataset.qrels, rankings)
        ndcg = [per_query["nDCG@10"][qid] for qid in dataset.qrels]
        baseline = baseline or ndcg
        rows.append(
            {
                **asdict(config),
                "metrics": means,
                "p_ndcg10_vs_first": eval_report.paired_p(ndcg, baseline),
                "timings_ms": eval_report.timing_summary(timings),
                "per_query": per_query,
                "top10": {qid: docs[:10] for qid, docs in rankings.items()},
            }
        )
    report: dict[str, Any] = {
        "dataset": {
            "name": dataset.name,
            "queries": len(dataset.queries),
            "documents": len(dataset.corpus),
            "qrels": dataset.qrels_name,
            "split": dataset.split,
            "split_rule": f"sha256(query id) % {EVAL_MODULUS} == 0 -> eval, else train",
            "skipped_queries": dataset.skipped,
            "query_ids": list(dataset.queries),
        },
        "embedder": embedder.name,
        "reranker": reranker.name if reranker is not None else "none",
        "store": store_label or type(store).__name__,
        "options": {k: v for k, v in asdict(options).items() if k != "notes"},
        "index": index,
        "configurations": rows,
        "notes": notes,
        "command": command,
    }
    report["files"] = {k: str(v) for k, v in eval_report.write(report, out).items()}
    report["files"]["runs"] = str(eval_report.write_runs({c.name: results[c.name][0] for c in configs}, out))
    return report
