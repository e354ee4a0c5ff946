"""What ``sieve eval`` does around ``api.evaluate.evaluate``: settings, the store, option parsing."""

from __future__ import annotations

import random
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from api import eval_report
from api.beir import BeirDataset, query_split
from api.evaluate import EvalOptions, evaluate
from api.gate_store import reranker_identity
from retrieval import VectorStore


@contextmanager
def eval_store(milvus_uri: str | None, *, keep: bool = False) -> Iterator[tuple[VectorStore, str]]:
    """A store on a fresh collection: at ``milvus_uri`` (``memory://`` for in-process), else on a Milvus Lite
    server started here in a temporary folder (``api.stack.Stack.start_milvus``) and stopped afterwards."""
    from api.stack import Stack, free_port
    from retrieval.backends import make_store
    from retrieval.settings import RetrievalSettings

    collection = f"sieve_eval_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="sieve-eval-") as home:
        stack = None
        if milvus_uri is None:
            stack = Stack(home=Path(home), milvus_port=free_port())
            stack.start_milvus()
            milvus_uri = stack.milvus_uri
        store = make_store(RetrievalSettings(milvus_uri=milvus_uri, collection=collection))
        try:
            yield store, f"{type(store).__name__} at {milvus_uri}, collection {collection}"
        finally:
            drop, close = getattr(store, "drop", None), getattr(store, "close", None)
            if drop is not None and not keep and stack is None:
                drop()
            if close is not None:
                close()
            if stack is not None:
                stack.stop()


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
    """(held-out queries: the eval split, the first ``heldout``; a sample of ``train`` train-split queries, in
    file order, drawn with a fixed seed), both over the same corpus."""
    eval_ids = [q for q in dataset.queries if query_split(q) == "eval"][:heldout]
    train_ids = [q for q in dataset.queries if query_split(q) == "train"]
    if len(train_ids) > train:
        chosen = set(random.Random(seed).sample(train_ids, train))
        train_ids = [q for q in train_ids if q in chosen]
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
    milvus_uri: str | None = None,
    qrels: str | None = None,
    split: str = "all",
    max_queries: int | None = None,
    corpus_limit: int | None = None,
    options: EvalOptions | None = None,
    keep_index: bool = False,
    gate_train_queries: int = 100,
    console: Console | None = None,
    command: str = "",
) -> dict[str, Any]:
    """What ``sieve eval`` does: load the folder, build the configured embedder and reranker, evaluate.

    With ``options.gate`` the table runs on the eval split (the held-out queries the gate decides on) and the
    fusion is learned on ``gate_train_queries`` train-split queries."""
    from api.beir import load_beir
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
        dataset, train = gate_split(everything, heldout=max_queries, train=gate_train_queries)
    else:
        dataset = load_beir(
            folder, qrels=qrels, split=split, max_queries=max_queries, corpus_limit=corpus_limit
        )
    console.print(
        f"{dataset.name}: {len(dataset.queries)} queries ({dataset.qrels_name}, split {dataset.split}), "
        f"{len(dataset.corpus)} documents"
        + (f"; the rerank gate learns on {len(train.queries)} train queries" if train is not None else "")
    )
    rerank_settings = RerankSettings()
    embedder, reranker = make_embedder(), make_reranker(rerank_settings)
    identity = reranker_identity(reranker, rerank_settings)
    with eval_store(milvus_uri, keep=keep_index) as (store, label):
        return evaluate(
            dataset,
            out,
            store=store,
            embedder=embedder,
            reranker=reranker,
            options=options,
            console=console,
            store_label=label,
            command=command,
            train=train,
            identity=identity,
        )
