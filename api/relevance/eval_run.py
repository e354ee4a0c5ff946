"""What ``sieve eval`` does around ``api.relevance.evaluate.evaluate``: settings, the store, option
parsing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from api.relevance import eval_report
from api.relevance.beir import BeirDataset, query_split, sample_ids
from api.relevance.eval_options import EvalOptions
from api.relevance.evaluate import evaluate
from api.rerank_gate import reranker_identity
from retrieval import VectorStore


def parse_weights(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    parts = [float(part) for part in text.split(",")]
    if len(parts) != 2:
        raise ValueError(f"expected two comma-separated weights, got {text!r}")
    return parts[0], parts[1]


def summary_rows(report: Mapping[str, Any]) -> list[list[str]]:
    return [
        [c["name"], *(f"{c['metrics'][m]:.4f}" for m in eval_report.MEASURE_NAMES)]
        for c in report["configurations"]
    ]


def gate_split(
    dataset: BeirDataset, *, heldout: int | None, train: int, seed: int = 0
) -> tuple[BeirDataset, BeirDataset]:
    """(held-out queries: ``heldout`` of the eval split; ``train`` train-split queries; each drawn with
    ``seed``, in file order), both over the same corpus."""
    eval_ids = sample_ids([q for q in dataset.queries if query_split(q) == "eval"], heldout, seed)
    train_ids = sample_ids([q for q in dataset.queries if query_split(q) == "train"], train, seed)
    if not eval_ids or not train_ids:
        raise ValueError(
            f"the rerank gate needs queries of both splits: {len(eval_ids)} eval, {len(train_ids)} train"
        )

    def part(ids: list[str], split: str) -> BeirDataset:
        return replace(
            dataset,
            queries={q: dataset.queries[q] for q in ids},
            qrels={q: dataset.qrels[q] for q in ids},
            split=split,
        )

    return part(eval_ids, "eval"), part(train_ids, "train")


def run(
    folder: Path,
    out: Path,
    *,
    store: VectorStore,
    store_label: str,
    qrels: str | None = None,
    split: str = "all",
    max_queries: int | None = None,
    corpus_limit: int | None = None,
    options: EvalOptions | None = None,
    gate_train_queries: int = 100,
    seed: int = 0,
    console: Console | None = None,
    command: str = "",
) -> dict[str, Any]:
    """What ``sieve eval`` does: load the folder, build the configured embedder and reranker, evaluate on
    ``store`` (a fresh collection the caller provides and cleans up).

    With ``options.gate`` the table runs on the eval split (the held-out queries the gate decides on) and the
    fusion is learned on ``gate_train_queries`` train-split queries."""
    from api.relevance.beir import load_beir
    from ingestion.settings import IngestSettings
    from reranking import RerankSettings, make_reranker
    from retrieval.backends import make_embedder

    console = console or Console(stderr=True)
    ingest = IngestSettings()
    options = options or EvalOptions(chunk_tokens=ingest.chunk_tokens, chunk_overlap=ingest.chunk_overlap)
    train = None
    if options.gate:
        if split not in ("all", "eval"):
            raise ValueError(
                "--gate decides on the eval split; learn on train queries with --gate-train-queries"
            )
        everything = load_beir(folder, qrels=qrels, split="all", corpus_limit=corpus_limit)
        dataset, train = gate_split(everything, heldout=max_queries, train=gate_train_queries, seed=seed)
    else:
        dataset = load_beir(
            folder, qrels=qrels, split=split, max_queries=max_queries, corpus_limit=corpus_limit, seed=seed
        )
    console.print(
        f"{dataset.name}: {len(dataset.queries)} queries ({dataset.qrels_name}, split {dataset.split}), "
        f"{len(dataset.corpus)} documents"
        + (f"; the gates learn on {len(train.queries)} train queries" if train is not None else "")
    )
    rerank_settings = RerankSettings()
    embedder, reranker = make_embedder(), make_reranker(rerank_settings)
    identity = reranker_identity(reranker, rerank_settings)
    return evaluate(
        dataset,
        out,
        store=store,
        embedder=embedder,
        reranker=reranker,
        options=options,
        console=console,
        store_label=store_label,
        command=command,
        train=train,
        identity=identity,
    )
