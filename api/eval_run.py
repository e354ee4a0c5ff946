"""What ``sieve eval`` does around ``api.evaluate.evaluate``: settings, the store, option parsing."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from api import eval_report
from api.evaluate import EvalOptions, evaluate
from retrieval import VectorStore


@contextmanager
def eval_store(milvus_uri: str | None, *, keep: bool = False) -> Iterator[tuple[VectorStore, str]]:
    """A store on a fresh collection: at ``milvus_uri`` (``memory://`` for in-process), else on a Milvus Lite
    server started here in a temporary folder (``api.stack.Stack.start_milvus``) and stopped afterwards."""
    from api.stack import Stack, free_port
    from retrieval.settings import RetrievalSettings
    from retrieval.store import make_store

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
    console: Console | None = None,
    command: str = "",
) -> dict[str, Any]:
    """What ``sieve eval`` does: load the folder, build the configured embedder and reranker, evaluate."""
    from api.beir import load_beir
    from api.models import build_embedder
    from ingestion.settings import IngestSettings
    from reranking import make_reranker

    console = console or Console(stderr=True)
    ingest = IngestSettings()
    options = options or EvalOptions(chunk_tokens=ingest.chunk_tokens, chunk_overlap=ingest.chunk_overlap)
    dataset = load_beir(folder, qrels=qrels, split=split, max_queries=max_queries, corpus_limit=corpus_limit)
    console.print(
        f"{dataset.name}: {len(dataset.queries)} queries ({dataset.qrels_name}, split {split}), "
        f"{len(dataset.corpus)} documents"
    )
    embedder, reranker = build_embedder(), make_reranker()
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
        )
