"""``sieve eval``: measure retrieval configurations on a BEIR-layout folder (see ``api.relevance.beir``).

1. Index: every document's text is chunked like an ingested file (``ingestion.chunking``, by the embedder's
   tokenizer, ``INGEST_CHUNK_TOKENS`` / ``INGEST_CHUNK_OVERLAP`` capped by the embedder), with its title as
   every chunk's context (``options.context``; without it the title opens the first chunk's text, as
   before chunks had a context), embedded with the configured embedder and written to a collection of its
   own (``sieve_eval_<random>``, tenant ``eval``), dropped afterwards unless kept. A run whose modes are all
   ``bm25`` embeds nothing: its chunks get one placeholder vector.
2. Search (``api.relevance.eval_probe``): each query runs once per stage-1 mode (``bm25``, ``dense``,
   ``hybrid``), asking the store for ``2 × depth`` chunks; chunks become documents by their best chunk (a
   document's score is its best chunk's), keeping the first ``depth`` (100) documents. With ``sum`` among
   ``options.aggregations`` each mode also ranks documents by the sum of their ``aggregate_chunks`` best
   chunks' scores (``{mode}+sum``; stage 1 only, the rerank stage reads the best chunk).
3. Rerank (where ``RERANK_BACKEND`` is not ``none``, for the ``rerank_modes``; the CLI's default is
   ``RETRIEVAL_SEARCH_MODE``): the reranker scores the best chunk of each of the top ``rerank_depth``
   documents, once per (query, chunk) whatever the number of configurations. ``+rerank`` orders them by its
   score, ``+rerank+fusion`` by ``retrieval.fusion.fuse_rerank`` of the stage-1 and rerank scores (RRF, or
   ``weighted`` interpolation), ``+rerank+learned`` (with ``gate``) by the fusion ``api.relevance.gate``
   learned on train-split queries; the gate's decision is taken on this run's (eval-split) queries, written to
   ``gate.json`` and summarised in report.md. Documents below ``rerank_depth`` keep their stage-1 order
   after them, so recall@100 stays comparable.
   Before that, with ``gate``, the stage-1 gate (``api.relevance.stage1_gate``): every train and held-out
   query's dense and bm25 legs are searched once; the stage-1 configuration learned on the train queries
   is adopted only when it beats the default on the held-out ones. Adopted, it becomes the pseudo-mode
   ``tuned`` (a stage-1 row of the table), the rerank gate learns and decides on its order
   (``tuned+rerank+learned``), and ``gate.json`` holds both decisions; otherwise the rerank gate runs on
   ``options.decided_mode`` as before. Without a rerank stage ``gate.json`` holds the stage-1 decision and a
   rerank gate that is off.
4. Report: ``api.relevance.eval_report`` (ir-measures, paired t-test against the first configuration,
   Markdown, JSON and a chart) with per-stage timings per query.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from api.gate_decision import Fusion, GateDecision, Stage1Decision
from api.relevance import eval_report
from api.relevance.beir import EVAL_MODULUS, BeirDataset
from api.relevance.eval_options import AGGREGATIONS, EvalConfig, EvalOptions
from api.relevance.eval_probe import TENANT, QueryProbe, probe_query
from api.relevance.eval_progress import progress
from api.relevance.gate import RERANK_ONLY, QueryRun, learn_fusion, without_rerank
from api.relevance.gate import decide as decide_gate
from api.relevance.stage1_gate import STAGE1_GRID, decide_stage1, learn_stage1
from api.rerank_gate import RerankerIdentity, reranker_identity
from ingestion.parsers import Section
from ingestion.pipeline import ChunkBudget, write_chunks
from reranking import Reranker
from retrieval import Chunk, Embedder, VectorStore
from retrieval.fusion import SEARCH_MODES


def configurations(options: EvalOptions, reranker: Reranker | None) -> list[EvalConfig]:
    unknown = [mode for mode in options.modes if mode not in SEARCH_MODES]
    if unknown or not options.modes:
        raise ValueError(f"unknown search modes {unknown}: use some of {', '.join(SEARCH_MODES)}")
    outside = [mode for mode in options.reranked_modes if mode not in options.modes]
    if outside or not options.reranked_modes:
        raise ValueError(f"rerank modes {outside or '(none)'} must be some of the modes {options.modes}")
    if options.gate and options.decided_mode not in options.reranked_modes:
        raise ValueError(f"the gate's mode {options.decided_mode!r} must be one of the rerank modes")
    wrong = [name for name in options.aggregations if name not in AGGREGATIONS]
    if wrong or not options.aggregations:
        raise ValueError(f"unknown aggregations {wrong}: use some of {', '.join(AGGREGATIONS)}")
    if options.aggregate_chunks < 1:
        raise ValueError("aggregate_chunks must be at least 1")
    configs = []
    for mode in options.modes:
        configs += [
            EvalConfig(mode if name == "best" else f"{mode}+{name}", mode, aggregate=name)
            for name in options.aggregations
        ]
    if reranker is not None and reranker.reorders:
        rerank_modes = options.reranked_modes
        configs += [EvalConfig(f"{mode}+rerank", mode, rerank=True) for mode in rerank_modes]
        configs += [
            EvalConfig(f"{mode}+rerank+fusion", mode, rerank=True, fuse=True) for mode in rerank_modes
        ]
        if options.gate:
            mode = options.decided_mode
            configs.append(EvalConfig(f"{mode}+rerank+learned", mode, rerank=True, learned=True))
    return configs


class PlaceholderVectors:
    """The embedder's name, size and tokenizer, but one fixed unit vector for every passage: what a run that
    searches no vectors (bm25 only) writes, so that indexing does not embed the corpus."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self.name, self.dimension, self.max_tokens = embedder.name, embedder.dimension, embedder.max_tokens

    def warm_up(self) -> None:
        self._embedder.warm_up()

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)


def document_sections(dataset: BeirDataset, doc_id: str, context: bool) -> list[Section]:
    """What a BEIR document is chunked from: its text with its title as context, or (``context`` off) title
    and text as one text."""
    if not context:
        return [Section(dataset.document_text(doc_id))]
    title, text = dataset.corpus[doc_id]
    return [Section(text.strip() or title.strip(), title=title.strip())]


def build_index(
    dataset: BeirDataset, store: VectorStore, embedder: Embedder, options: EvalOptions, console: Console
) -> dict[str, Any]:
    """Chunk, embed and write the corpus with the ingestion pipeline's own budget and writer (what a
    worker does with an upload); returns counts and the time of each step."""
    budget = ChunkBudget.of(embedder, chunk_tokens=options.chunk_tokens, chunk_overlap=options.chunk_overlap)
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    writer: Embedder = embedder if options.needs_vectors else PlaceholderVectors(embedder)
    chunk_s = 0.0

    with progress(console, "indexing documents", len(dataset.corpus)) as bar:

        def chunks() -> Iterator[Chunk]:
            nonlocal chunk_s
            for doc_id in dataset.corpus:
                started = time.perf_counter()
                pieces = budget.split(document_sections(dataset, doc_id, options.context), embedder)
                chunk_s += time.perf_counter() - started
                for piece in pieces:
                    yield Chunk(
                        tenant=TENANT,
                        document_id=doc_id,
                        version="eval",
                        position=piece.position,
                        text=piece.text,
                        context=piece.context,
                    )
                bar.advance()

        written = write_chunks(chunks(), store=store, embedder=writer, batch=options.batch)
    return {
        "documents": len(dataset.corpus),
        "chunks": written.chunks,
        "chunk_tokens": budget.tokens,
        "overlap": budget.overlap,
        "chunk_s": chunk_s,
        "embed_s": written.embed_s,
        "upsert_s": written.upsert_s,
        "embedded": options.needs_vectors,
        "context": options.context,
    }


def _fusion(config: EvalConfig, options: EvalOptions, learned: Fusion | None) -> Fusion | None:
    """How a configuration orders the reranked head (None: stage 1)."""
    if not config.rerank:
        return None
    if config.learned:
        return learned
    if config.fuse:
        weights = options.rerank_weights or (1.0, 1.0)
        return Fusion(
            method="weighted" if options.rerank_fusion == "weighted" else "rrf",
            stage1_weight=weights[0],
            rerank_weight=weights[1],
            rrf_k=options.rrf_k,
        )
    return RERANK_ONLY


Results = dict[str, tuple[dict[str, list[str]], dict[str, list[float]]]]


def run_queries(
    queries: Mapping[str, str],
    store: VectorStore,
    embedder: Embedder,
    reranker: Reranker | None,
    configs: Sequence[EvalConfig],
    options: EvalOptions,
    console: Console,
    *,
    learned: Fusion | None = None,
    label: str = "running queries",
    probes: dict[str, QueryProbe] | None = None,
    modes: Sequence[str] = (),
) -> tuple[Results, dict[str, dict[str, QueryRun]]]:
    """Per configuration: (query id -> ranked document ids, stage -> per-query milliseconds); and per mode
    that reranks, each query's ``QueryRun`` (stage-1 documents and rerank scores, for the gate).

    ``modes`` are searched besides the configurations'; ``probes`` (query id -> probe) are extended rather
    than made anew, and hold each query's probe afterwards."""
    results: Results = {c.name: ({}, {}) for c in configs}
    modes = tuple(dict.fromkeys([*modes, *(c.mode for c in configs)]))
    rerank_modes = tuple(dict.fromkeys(c.mode for c in configs if c.rerank))
    runs: dict[str, dict[str, QueryRun]] = {mode: {} for mode in rerank_modes}
    with progress(console, label, len(queries)) as bar:
        for qid, query in queries.items():
            probe = probe_query(
                query,
                modes=modes,
                rerank_modes=rerank_modes,
                store=store,
                embedder=embedder,
                reranker=reranker,
                options=options,
                probe=probes.get(qid) if probes is not None else None,
            )
            if probes is not None:
                probes[qid] = probe
            for mode in rerank_modes:
                runs[mode][qid] = probe.run(mode)
            for config in configs:
                ranking, timings = results[config.name]
                stage = probe.stage_ms(config.mode)
                fusion = _fusion(config, options, learned)
                started = time.perf_counter()
                if config.rerank:
                    ranking[qid] = probe.run(config.mode).ranking(fusion)
                else:
                    ranking[qid] = probe.ranking(config.mode, config.aggregate, options)
                if config.rerank:
                    stage["rerank"] = probe.rerank_ms.get(config.mode, 0.0)
                    if config.fuse or config.learned:
                        stage["fusion"] = (time.perf_counter() - started) * 1000
                stage["total"] = sum(stage.values())
                for name, ms in stage.items():
                    timings.setdefault(name, []).append(ms)
            bar.advance()
    return results, runs


TUNED = "tuned"  # the pseudo-mode of the stage-1 configuration the gate adopted
LEGS = ("dense", "bm25")


def stage1_gate(
    dataset: BeirDataset,
    train: BeirDataset,
    store: VectorStore,
    embedder: Embedder,
    options: EvalOptions,
    console: Console,
    *,
    probes: tuple[dict[str, QueryProbe], dict[str, QueryProbe]],
) -> Stage1Decision:
    """Search the legs of the train and held-out queries (into ``probes``), learn the stage-1 configuration
    on the train ones, decide on the held-out ones; adopted, it is added to every probe as ``TUNED``."""
    train_probes, held_probes = probes
    for queries, into, split in (
        (train.queries, train_probes, "train"),
        (dataset.queries, held_probes, "held-out"),
    ):
        run_queries(
            queries,
            store,
            embedder,
            None,
            [],
            options,
            console,
            label=f"stage 1 ({split} queries)",
            probes=into,
            modes=LEGS,
        )
    default = options.default_stage1
    learned, grid = learn_stage1(
        {q: p.legs() for q, p in train_probes.items()},
        train.qrels,
        depth=options.depth,
        grid=(default, *(config for config in STAGE1_GRID if config != default)),
    )
    decision = decide_stage1(
        {q: p.legs() for q, p in held_probes.items()},
        dataset.qrels,
        learned,
        default=default,
        dataset=dataset.name,
        depth=options.depth,
        train_ids=list(train.queries),
        grid=grid,
        min_gain=options.min_gain,
        alpha=options.gate_alpha,
    )
    if decision.adopted:
        for probe in (*train_probes.values(), *held_probes.values()):
            probe.add(TUNED, learned, options.depth)
    return decision


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
    train: BeirDataset | None = None,
    identity: RerankerIdentity | None = None,
) -> dict[str, Any]:
    """Index ``dataset``, run every configuration, write the report (``api.relevance.eval_report``) to
    ``out``.

    With ``options.gate``: learn the fusion on ``train``'s queries (disjoint from ``dataset``'s, same corpus),
    add ``{mode}+rerank+learned``, decide the rerank gate on ``dataset``'s queries and write ``gate.json``.
    ``identity`` is the reranker's as search will see it (default: its name and ``revision`` attribute)."""
    options = options or EvalOptions()
    console = console or Console(stderr=True)
    configs = configurations(options, reranker)
    notes = list(options.notes)
    if reranker is None or not reranker.reorders:
        notes.append(
            "no rerank stage configured (RERANK_BACKEND=none): the +rerank configurations were skipped"
        )
    gating = options.gate and reranker is not None and reranker.reorders
    if options.gate and not gating:
        notes.append("the rerank gate needs a rerank stage: only the stage-1 gate decides")
    if options.gate and not options.needs_vectors:
        notes.append("the stage-1 gate needs the dense leg: a bm25-only run does not learn it")
    if options.gate and (train is None or not train.queries):
        raise ValueError("the gate needs train-split queries to learn on")
    embedder.warm_up()
    if reranker is not None:
        reranker.warm_up()
    index = build_index(dataset, store, embedder, options, console)
    learned: Fusion | None = None
    grid: list[dict[str, Any]] = []
    mode = options.decided_mode
    train_probes: dict[str, QueryProbe] = {}
    held_probes: dict[str, QueryProbe] = {}
    stage1: Stage1Decision | None = None
    if options.gate and options.needs_vectors and train is not None:
        stage1 = stage1_gate(
            dataset, train, store, embedder, options, console, probes=(train_probes, held_probes)
        )
        if stage1.adopted:
            mode = TUNED
            configs = [
                *(c for c in configs if not c.learned),
                EvalConfig(TUNED, TUNED),
                *(
                    [EvalConfig(f"{TUNED}+rerank+learned", TUNED, rerank=True, learned=True)]
                    if gating
                    else []
                ),
            ]
    if gating and train is not None:
        _, train_runs = run_queries(
            train.queries,
            store,
            embedder,
            reranker,
            [EvalConfig(f"{mode}+rerank", mode, rerank=True)],
            options,
            console,
            label="learning the fusion (train queries)",
            probes=train_probes,
        )
        learned, grid = learn_fusion(train_runs[mode], train.qrels)
    results, runs = run_queries(
        dataset.queries,
        store,
        embedder,
        reranker,
        configs,
        options,
        console,
        learned=learned,
        probes=held_probes,
    )
    decision: GateDecision | None = None
    stage1_mode = stage1.learned.label if stage1 is not None and stage1.adopted else mode
    if stage1 is not None and not gating:
        decision = without_rerank(
            stage1,
            dataset=dataset.name,
            reranker=reranker.name if reranker is not None else "none",
            embedder=embedder.name,
            rerank_depth=options.rerank_depth,
        )
    if gating and train is not None and learned is not None and reranker is not None:
        identity = identity or reranker_identity(reranker)
        decision = decide_gate(
            runs[mode],
            dataset.qrels,
            learned,
            dataset=dataset.name,
            reranker=identity.name,
            reranker_model=identity.model,
            reranker_revision=identity.revision,
            embedder=embedder.name,
            stage1_mode=stage1_mode,
            rerank_depth=options.rerank_depth,
            train_ids=list(train.queries),
            grid=grid,
            min_gain=options.min_gain,
            alpha=options.gate_alpha,
        ).model_copy(update={"stage1": stage1})
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
    if decision is not None and train is not None:
        report["gate"] = decision.model_dump(mode="json")
        report["gate_train"] = {"queries": len(train.queries), "split": train.split}
    report["files"] = {k: str(v) for k, v in eval_report.write(report, out).items()}
    if decision is not None:
        gate_path = out / "gate.json"
        gate_path.write_text(decision.model_dump_json(indent=1) + "\n", encoding="utf-8")
        report["files"]["gate"] = str(gate_path)
    report["files"]["runs"] = str(eval_report.write_runs({c.name: results[c.name][0] for c in configs}, out))
    return report
