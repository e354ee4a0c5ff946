"""The figures behind deploy/SIZING.md, as tables.

``measure``: chunk a BEIR corpus as ingestion does (the default embedder's tokenizer, INGEST_CHUNK_TOKENS and
INGEST_CHUNK_OVERLAP, titles as context) and measure what one chunk costs Milvus besides its vector: the UTF-8
bytes of its text and of its lexical field (``retrieval.lexical.analyze``), and its distinct lexical terms
(one BM25 posting each). Sizes, not times: it runs anywhere.

``plan``: the sizing of a collection from those figures and the measured per-GPU rerank throughput, each
line with its formula.

    python tests/benchmarks/bench_sizing.py measure --data ../shared/data/scifact
    python tests/benchmarks/bench_sizing.py plan --chunks 100e6 --dim 1024 \
        --text-bytes 1180 --lexical-bytes 1000 --terms 120 --rerank-qps-per-gpu 40.4 --target-qps 400
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

GIB = 1024**3


def measure(data: Path, full_from: int) -> None:
    from api.relevance.beir import load_beir
    from api.relevance.evaluate import document_sections
    from ingestion.chunking import chunk_sections
    from ingestion.settings import IngestSettings
    from retrieval.backends import make_embedder
    from retrieval.lexical import analyze, terms

    settings = IngestSettings()
    embedder = make_embedder()
    dataset = load_beir(data)
    rows: list[tuple[int, int, int, int]] = []  # tokens, text bytes, lexical bytes, distinct terms
    for doc_id in dataset.corpus:
        chunks = chunk_sections(
            document_sections(dataset, doc_id, context=True),
            count_tokens=embedder.count_tokens,
            chunk_tokens=min(settings.chunk_tokens, embedder.max_tokens),
            overlap_tokens=settings.chunk_overlap,
        )
        for chunk in chunks:
            indexed = f"{chunk.context}\n\n{chunk.text}" if chunk.context else chunk.text
            rows.append(
                (
                    embedder.count_tokens(indexed),
                    len(chunk.text.encode()),
                    len(analyze(indexed).encode()),
                    len(set(terms(indexed))),
                )
            )
    full = [r for r in rows if r[0] >= full_from]
    print(
        f"{dataset.name}: {len(dataset.corpus)} documents, {len(rows)} chunks, embedder {embedder.name}, "
        f"chunk_tokens {settings.chunk_tokens}, overlap {settings.chunk_overlap}"
    )
    print()
    print("| chunks | n | tokens | text bytes | lexical bytes | distinct terms | text bytes per token |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, group in (("all", rows), (f"full (>= {full_from} tokens)", full)):
        if not group:
            continue
        tokens, text, lexical, distinct = (statistics.fmean(col) for col in zip(*group, strict=True))
        print(
            f"| {label} | {len(group)} | {tokens:.0f} | {text:.0f} | {lexical:.0f} | {distinct:.0f} "
            f"| {text / tokens:.2f} |"
        )


def plan(args: argparse.Namespace) -> None:
    n = args.chunks
    vector = args.dim * 4  # float32
    # HNSW (hnswlib layout, which Milvus's HNSW follows): level 0 keeps 2*M neighbour ids of 4 bytes and a
    # count; upper levels hold a 1/M share of the points with M ids each; the vector itself sits in the index.
    graph = 2 * args.m * 4 + 4 + (args.m * 4 + 4) / (args.m - 1) + 8
    sparse = args.terms * 8  # one BM25 posting per distinct term: term id 4 B + weight 4 B
    scalars = args.text_bytes + args.lexical_bytes + args.other_bytes
    per_chunk = vector + graph + sparse + scalars
    total = n * per_chunk
    usable = args.node_memory_gib * args.usable_share
    nodes_one_replica = math.ceil(total / GIB / usable)
    gpus = math.ceil(args.target_qps * args.headroom / args.rerank_qps_per_gpu)
    rows = [
        ("vector", f"{args.dim} x 4 B", vector, n * vector),
        (f"HNSW graph (M={args.m})", "2M x 4 + 4 + (4M + 4)/(M-1) + 8 B", graph, n * graph),
        ("BM25 postings", f"{args.terms:.0f} distinct terms x 8 B", sparse, n * sparse),
        (
            "text + lexical + ids/metadata",
            f"{args.text_bytes:.0f} + {args.lexical_bytes:.0f} + {args.other_bytes:.0f} B",
            scalars,
            n * scalars,
        ),
        ("total", "", per_chunk, total),
    ]
    print(f"{n:.3g} chunks, dim {args.dim}")
    print()
    print("| part | per chunk | bytes per chunk | for all chunks |")
    print("| --- | --- | --- | --- |")
    for part, formula, each, whole in rows:
        print(f"| {part} | {formula} | {each:,.0f} | {whole / GIB:,.0f} GiB |")
    print()
    print(
        f"Query nodes of {args.node_memory_gib} GiB, {args.usable_share:.0%} usable for segments: "
        f"{total / GIB:,.0f} / {usable:,.0f} = {nodes_one_replica} per replica; "
        f"x {args.replicas} replicas = {nodes_one_replica * args.replicas} query nodes."
    )
    print(
        f"Rerank GPUs for {args.target_qps:g} q/s at {args.rerank_qps_per_gpu:g} q/s per GPU with "
        f"{args.headroom:g}x headroom: "
        f"ceil({args.target_qps:g} x {args.headroom:g} / {args.rerank_qps_per_gpu:g}) = {gpus}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--data", type=Path, required=True, help="a BEIR folder (corpus.jsonl[.gz])")
    m.add_argument("--full-from", type=int, default=224, help="a chunk of at least this many tokens is full")
    p = sub.add_parser("plan")
    p.add_argument("--chunks", type=float, default=100e6)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--m", type=int, default=16, help="RETRIEVAL_HNSW_M")
    p.add_argument("--text-bytes", type=float, required=True)
    p.add_argument("--lexical-bytes", type=float, required=True)
    p.add_argument("--terms", type=float, required=True)
    p.add_argument(
        "--other-bytes", type=float, default=200, help="id, tenant, doc_id, version, page, metadata"
    )
    p.add_argument("--node-memory-gib", type=float, default=256)
    p.add_argument("--usable-share", type=float, default=0.7)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--rerank-qps-per-gpu", type=float, required=True)
    p.add_argument("--target-qps", type=float, default=400)
    p.add_argument("--headroom", type=float, default=1.25)
    args = parser.parse_args()
    if args.what == "measure":
        measure(args.data, args.full_from)
    else:
        plan(args)


if __name__ == "__main__":
    main()
