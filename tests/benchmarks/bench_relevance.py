"""Relevance of Sieve's stage 1 beside a stock BM25, on the same queries: a table of nDCG@10 and MRR@10.

Rows (each a ``sieve eval`` configuration, ``api.relevance.evaluate``, on a Milvus Lite server of its own):

    stock BM25            bm25s over whole documents (title + text), its defaults (Lucene BM25, k1 1.5,
                          b 0.75); English: its English stop words and the Snowball English stemmer; Chinese
                          (``--language zh``): jieba's search segmentation, as bm25s has no Chinese tokenizer
    before: <mode>        Sieve as it was: BM25 over ``text`` analysed by Milvus's jieba tokenizer (a
                          collection made with the old schema), the title at the start of the first chunk only
    analysis: <mode>      the lexical field (``retrieval.lexical``), the title still in the first chunk only
    +context: <mode>      the lexical field, the title as every chunk's context (embedded and indexed)
    +context+sum: <mode>  as +context, each document scored by the sum of its 3 best chunks, not its best one
    +context+lang: <mode> as +context, with per-query legs (``retrieval.fusion.plan_legs``, the service's
                          default): hybrid is bm25 alone for a query the embedder does not read
    +context+rrf: hybrid  as +context, the legs fused by RRF k 60 (the default before standardised scores,
                          ``retrieval.fusion``); its bm25 and dense rows are +context's

``p`` is a two-sided paired t-test over per-query nDCG@10 against the ``before`` row of the same mode (the
stock row: against ``before: bm25``); ``--variants`` runs some of them (the first one given is then the
base of Δ and p). Embeddings are the bundled MiniLM (``RETRIEVAL_EMBEDDER``), cached by
text within a run, so identical chunks are embedded once. ``--bm25-only`` skips every vector (no embedding).

Where the CPU is too slow to embed the corpus twice, the vectors can come from elsewhere: ``--dump-texts
FILE`` writes every text the run will embed (each variant's chunks as embedded, the queries) and stops;
``tests/benchmarks/embed_texts.py`` embeds them (e.g. on a GPU, same model); ``--vectors FILE`` preloads the
cache with them, checks a sample against the local embedder (the table's header gives the least cosine)
and embeds locally only what is missing.

    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python tests/benchmarks/bench_relevance.py \\
        --data ../shared/data/scifact --qrels train --split eval --out bench-scifact
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python tests/benchmarks/bench_relevance.py \\
        --data ../shared/data/drcd-dev --language zh --out bench-drcd

Prints a Markdown table and writes it, with every variant's ``sieve eval`` report, under ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient
from rich.console import Console

from api.cli.eval import eval_store
from api.relevance import eval_report
from api.relevance.beir import BeirDataset, load_beir
from api.relevance.eval_options import EvalOptions
from api.relevance.evaluate import document_sections, evaluate
from ingestion.pipeline import ChunkBudget
from ingestion.settings import IngestSettings
from reranking import NoneReranker
from retrieval import Chunk, Embedder
from retrieval.backends import make_embedder
from retrieval.fusion import DEFAULT_FUSION
from retrieval.milvus_store import MilvusStore


@dataclass(frozen=True)
class Variant:
    name: str
    legacy: bool  # the collection schema before the lexical field
    context: bool
    aggregations: tuple[str, ...] = ("best",)
    language_fusion: bool = False  # hybrid: bm25 alone for queries the embedder cannot read
    fusion: str = DEFAULT_FUSION  # of the hybrid legs
    modes: tuple[str, ...] | None = None  # the modes it runs (None: all the run's)


VARIANTS = (
    Variant("before", legacy=True, context=False),
    Variant("analysis", legacy=False, context=False),
    Variant("+context", legacy=False, context=True, aggregations=("best", "sum")),
    Variant("+context+lang", legacy=False, context=True, language_fusion=True),
    Variant("+context+rrf", legacy=False, context=True, fusion="rrf", modes=("hybrid",)),
)


class CachingEmbedder:
    """The configured embedder, each distinct text embedded once per run."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._documents: dict[str, np.ndarray] = {}
        self._queries: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    @property
    def max_tokens(self) -> int:
        return self._embedder.max_tokens

    @property
    def languages(self) -> frozenset[str] | None:
        return getattr(self._embedder, "languages", None)

    def warm_up(self) -> None:
        self._embedder.warm_up()

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def _cached(self, cache: dict[str, np.ndarray], texts: Sequence[str], embed: Any) -> np.ndarray:
        keys = [hashlib.sha1(text.encode("utf-8")).hexdigest() for text in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in cache))
        if missing:
            first = {k: t for k, t in zip(keys, texts, strict=True)}
            for key, vector in zip(missing, embed([first[k] for k in missing]), strict=True):
                cache[key] = vector
        return np.stack([cache[k] for k in keys])

    def preload(self, path: Path) -> None:
        """Vectors from ``embed_texts.py`` (keys ``d:<sha1>`` for passages, ``q:<sha1>`` for queries)."""
        data = np.load(path)
        for key, vector in zip(data["keys"], data["vectors"], strict=True):
            kind, digest = str(key).split(":", 1)
            (self._documents if kind == "d" else self._queries)[digest] = vector

    def check(self, texts: Sequence[str]) -> float:
        """The least cosine between preloaded and freshly embedded vectors of ``texts``."""
        keys = [hashlib.sha1(text.encode("utf-8")).hexdigest() for text in texts]
        pairs = [(self._documents[k], t) for k, t in zip(keys, texts, strict=True) if k in self._documents]
        if not pairs:
            return float("nan")
        fresh = self._embedder.embed_documents([t for _, t in pairs])
        return float(min(float(np.dot(v, f)) for (v, _), f in zip(pairs, fresh, strict=True)))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(self._documents, texts, self._embedder.embed_documents)

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self._cached(self._queries, texts, lambda t: self._embedder.embed_queries(t))


def create_legacy_collection(uri: str, name: str, dimension: int) -> None:
    """The collection schema Sieve made before the lexical field: BM25 over ``text``, Milvus's jieba."""
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
    schema.add_field("tenant", DataType.VARCHAR, max_length=256, is_partition_key=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
    schema.add_field("version", DataType.VARCHAR, max_length=64)
    schema.add_field("position", DataType.INT64)
    schema.add_field("page", DataType.INT64)
    jieba = {"enable_analyzer": True, "analyzer_params": {"tokenizer": "jieba"}}
    schema.add_field("text", DataType.VARCHAR, max_length=65535, **jieba)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    bm25 = Function(
        name="text_bm25",
        function_type=FunctionType.BM25,
        input_field_names=["text"],
        output_field_names=["sparse"],
    )
    schema.add_function(bm25)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE", params={"M": 16})
    index.add_index(
        field_name="sparse",
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"bm25_k1": 1.2, "bm25_b": 0.75},
    )
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    client.close()


def stock_bm25(dataset: BeirDataset, language: str, depth: int = 100) -> dict[str, list[str]]:
    """bm25s over whole documents (see the module docstring): query id -> ranked document ids."""
    import bm25s
    import jieba
    import Stemmer

    ids = list(dataset.corpus)
    texts = [dataset.document_text(doc) for doc in ids]
    queries = list(dataset.queries.values())
    if language == "zh":

        def cut(items: list[str]) -> list[list[str]]:
            return [
                [t for t in jieba.cut_for_search(x.lower()) if any(c.isalnum() for c in t)] for x in items
            ]

        corpus_tokens, query_tokens = cut(texts), cut(queries)
    else:
        stemmer = Stemmer.Stemmer("english")
        corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
        query_tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    found, scores = retriever.retrieve(query_tokens, k=min(depth, len(ids)), show_progress=False)
    return {
        qid: [ids[i] for i, s in zip(row, score_row, strict=True) if s > 0]
        for qid, row, score_row in zip(dataset.queries, found, scores, strict=True)
    }


def texts_to_embed(dataset: BeirDataset, embedder: CachingEmbedder) -> list[dict[str, str]]:
    """Every passage the variants embed (context and text, as written) and every query, once each."""
    ingest = IngestSettings()
    budget = ChunkBudget.of(embedder, chunk_tokens=ingest.chunk_tokens, chunk_overlap=ingest.chunk_overlap)
    seen: dict[str, dict[str, str]] = {}
    for context in sorted({variant.context for variant in VARIANTS}):
        for doc in dataset.corpus:
            for piece in budget.split(document_sections(dataset, doc, context), embedder):
                chunk = Chunk(tenant="t", document_id=doc, version="v", position=0, text=piece.text)
                text = chunk.model_copy(update={"context": piece.context}).indexed_text
                seen.setdefault(f"d{text}", {"kind": "d", "text": text})
    for query in dataset.queries.values():
        seen.setdefault(f"q{query}", {"kind": "q", "text": query})
    return list(seen.values())


def run_variant(
    variant: Variant,
    dataset: BeirDataset,
    embedder: CachingEmbedder,
    modes: tuple[str, ...],
    out: Path,
    console: Console,
) -> dict[str, Any]:
    ingest = IngestSettings()
    options = EvalOptions(
        modes=tuple(mode for mode in modes if variant.modes is None or mode in variant.modes),
        chunk_tokens=ingest.chunk_tokens,
        chunk_overlap=ingest.chunk_overlap,
        context=variant.context,
        aggregations=variant.aggregations,
        language_fusion=variant.language_fusion,
        fusion=variant.fusion,
    )
    with eval_store(None) as (store, label):
        if variant.legacy:
            assert isinstance(store, MilvusStore)
            create_legacy_collection(store.settings.milvus_uri, store.settings.collection, embedder.dimension)
        started = time.perf_counter()
        report = evaluate(
            dataset,
            out / variant.name.strip("+"),
            store=store,
            embedder=embedder,
            reranker=NoneReranker(),
            options=options,
            console=console,
            store_label=label,
        )
    report["seconds"] = time.perf_counter() - started
    return report


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | nDCG@10 | Δ | p | MRR@10 | R@100 | chunks |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        delta = "" if row["delta"] is None else f"{row['delta']:+.4f}"
        p = "" if row["p"] is None else f"{row['p']:.3g}"
        lines.append(
            f"| {row['name']} | {row['nDCG@10']:.4f} | {delta} | {p} | {row['MRR@10']:.4f} | "
            f"{row['R@100']:.4f} | {row.get('chunks', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder")
    parser.add_argument("--qrels", default=None)
    parser.add_argument("--split", default="all")
    parser.add_argument("--language", choices=("en", "zh"), default="en", help="of the stock BM25 baseline")
    parser.add_argument("--queries", type=int, default=None, help="a seeded sample of N queries")
    parser.add_argument("--corpus-limit", type=int, default=None)
    parser.add_argument("--bm25-only", action="store_true", help="no vectors, nothing embedded")
    parser.add_argument("--out", type=Path, default=Path("bench-relevance"))
    parser.add_argument(
        "--variants", default=None, help="comma-separated variant names to run (default: all), e.g. +context"
    )
    parser.add_argument("--dump-texts", type=Path, help="write the texts to embed (.jsonl.gz) and stop")
    parser.add_argument("--vectors", type=Path, help="vectors of those texts, from embed_texts.py (.npz)")
    args = parser.parse_args()

    console = Console(stderr=True)
    dataset = load_beir(
        args.data,
        qrels=args.qrels,
        split=args.split,
        max_queries=args.queries,
        corpus_limit=args.corpus_limit,
        seed=0 if args.queries else None,
    )
    console.print(f"{dataset.name}: {len(dataset.queries)} queries, {len(dataset.corpus)} documents")
    modes = ("bm25",) if args.bm25_only else ("bm25", "dense", "hybrid")
    embedder = CachingEmbedder(make_embedder())
    embedder.warm_up()
    if args.dump_texts:
        rows = texts_to_embed(dataset, embedder)
        with gzip.open(args.dump_texts, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        console.print(f"{len(rows)} texts to embed: {args.dump_texts}")
        return
    checked = ""
    if args.vectors:
        embedder.preload(args.vectors)
        sample = [row["text"] for row in texts_to_embed(dataset, embedder) if row["kind"] == "d"]
        least = embedder.check(sample[:: max(1, len(sample) // 64)])
        checked = (
            f"; vectors from {args.vectors.name}, least cosine to this machine's on a sample: {least:.5f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)

    per_query: dict[str, dict[str, dict[str, float]]] = {}
    means: dict[str, dict[str, float]] = {}
    chunks: dict[str, int] = {}
    stock_means, stock_scores = eval_report.score_run(dataset.qrels, stock_bm25(dataset, args.language))
    per_query["stock BM25"], means["stock BM25"] = stock_scores, stock_means
    variants = VARIANTS
    if args.variants:
        by_name = {variant.name: variant for variant in VARIANTS}
        wanted = [name.strip() for name in args.variants.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            parser.error(f"--variants: unknown {unknown}; use some of {', '.join(by_name)}")
        variants = tuple(by_name[name] for name in wanted)
    for variant in variants:
        report = run_variant(variant, dataset, embedder, modes, args.out, console)
        for config in report["configurations"]:
            name = f"{variant.name}: {config['name']}".replace(
                f": {config['mode']}+sum", f"+sum: {config['mode']}"
            )
            per_query[name], means[name] = config["per_query"], config["metrics"]
            chunks[name] = report["index"]["chunks"]
        console.print(f"{variant.name}: {report['seconds']:.0f} s")

    rows = []
    qids = list(dataset.qrels)
    for name, scores in per_query.items():
        mode = name.rsplit(": ", 1)[-1] if name != "stock BM25" else "bm25"
        base = f"{variants[0].name}: {mode}"
        row: dict[str, Any] = {"name": name, **means[name], "chunks": chunks.get(name, "")}
        if name == base or base not in per_query:
            row["delta"], row["p"] = None, None
        else:
            row["delta"] = means[name]["nDCG@10"] - means[base]["nDCG@10"]
            row["p"] = eval_report.paired_p(
                [scores["nDCG@10"][q] for q in qids], [per_query[base]["nDCG@10"][q] for q in qids]
            )
        rows.append(row)
    order = ("bm25", "dense", "hybrid")
    rows.sort(key=lambda r: order.index(r["name"].rsplit(": ", 1)[-1]) if ": " in r["name"] else -1)
    text = (
        f"{dataset.name}: {len(qids)} queries ({dataset.qrels_name}, split {dataset.split}), "
        f"{len(dataset.corpus)} documents, embedder {embedder.name}{checked}\n\n{table(rows)}\n"
    )
    (args.out / "table.md").write_text(text, encoding="utf-8")
    (args.out / "table.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
