"""Benchmark: the embedded lexical index's bm25 search, FTS5 against the resident postings.

    nice -n 19 .venv/bin/python tests/benchmarks/bench_lexical.py --chunks 100000 \
        --scifact ../shared/data/scifact [--folder /tmp/bench-lexical] [--queries 200] [--limit 50]

A script, not a test. Builds (or, with ``--folder`` holding one already, reuses) one tenant's SQLite file
of ``--chunks`` passages of ``tests.support.search_corpus.Corpus`` (sentences of the SciFact abstracts, ~170
words each), analysed by ``retrieval.lexical.analyze`` as the store analyses chunks. Then it times
``SqliteLexicalIndex.search`` over the corpus's queries (the SciFact claims, analysed), once on FTS5
(``resident=False``) and once on the resident postings (built first by ``warm``: its time is the build's,
wall and CPU), and checks that both rank alike (the same scores, rank for rank). Prints a Markdown table;
writes it to $OUT/bench_lexical.md when OUT is set.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from retrieval.lexical import analyze  # noqa: E402
from retrieval.lexical_index import LexicalRow, SqliteLexicalIndex  # noqa: E402
from tests.support.search_corpus import VERSION, Corpus  # noqa: E402

TENANT = "bench"


def fill(index: SqliteLexicalIndex, corpus: Corpus, batch: int = 2000) -> float:
    started = time.perf_counter()
    rows: list[LexicalRow] = []
    for i, text in enumerate(corpus.passages()):
        document, position = divmod(i, corpus.per_document)
        rows.append(
            LexicalRow(
                TENANT,
                f"c{i}",
                f"bench-{document}",
                VERSION,
                analyze(text),
                position,
                None,
                text,
                {"n": i % 7},
            )
        )
        if len(rows) == batch:
            index.upsert(rows)
            rows = []
            print(f"  {i + 1} rows written", file=sys.stderr)
    index.upsert(rows)
    return time.perf_counter() - started


def timed(
    index: SqliteLexicalIndex, queries: list[str], limit: int
) -> tuple[list[float], list[float], list[list[float]]]:
    """Wall and CPU ms of each search (CPU: less swayed by other work on a shared machine), and the scores."""
    index.search(TENANT, queries[0], limit=limit)  # the page cache warm, as in a serving process
    wall, cpu, scores = [], [], []
    for query in queries:
        started, used = time.perf_counter(), time.process_time()
        hits = index.search(TENANT, query, limit=limit)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        scores.append([hit.score for hit in hits])
    return wall, cpu, scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--scifact", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--folder", type=Path, default=None, help="keep the index here (reused when present)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-lexical-"))
    corpus = Corpus(chunks=args.chunks, scifact=args.scifact)
    fts = SqliteLexicalIndex(folder, resident=False)
    have = fts.count(TENANT)
    if have not in (0, args.chunks):
        raise SystemExit(f"{folder} holds {have} rows, not {args.chunks}: use another --folder")
    if not have:
        print(f"writing {args.chunks} passages ({corpus.source}) to {folder}", file=sys.stderr)
        print(f"written in {fill(fts, corpus):.0f} s", file=sys.stderr)
    queries = [q for q in (analyze(text) for text in corpus.queries(args.queries)) if q]

    fts_ms, fts_cpu, fts_scores = timed(fts, queries, args.limit)
    resident = SqliteLexicalIndex(folder)
    started, cpu = time.perf_counter(), time.process_time()
    resident.warm(TENANT)
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu
    postings = resident._state(TENANT).postings
    assert postings is not None
    res_ms, res_cpu, res_scores = timed(resident, queries, args.limit)
    assert resident.resident_searches == len(queries) + 1
    alike = sum(
        len(a) == len(b) and all(abs(x - y) <= 1e-9 * max(abs(y), 1e-300) for x, y in zip(a, b, strict=True))
        for a, b in zip(res_scores, fts_scores, strict=True)
    )
    terms = statistics.mean(len(tokens.split()) for tokens in queries)

    def row(name: str, ms: list[float], cpu: list[float], build: str, memory: str) -> str:
        p50, p95, mean = statistics.median(ms), statistics.quantiles(ms, n=20)[18], statistics.mean(ms)
        cpu50, cpu95 = statistics.median(cpu), statistics.quantiles(cpu, n=20)[18]
        times = f"{p50:.1f} | {p95:.1f} | {mean:.1f} | {cpu50:.1f} / {cpu95:.1f}"
        return f"| {name} | {times} | {build} | {memory} |"

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"bm25 on the embedded lexical index: {args.chunks} chunks ({corpus.source}), {len(queries)} queries "
        f"(SciFact claims, {terms:.1f} analysed terms on average), top {args.limit}; {machine}",
        "",
        "| path | p50 ms | p95 ms | mean ms | CPU ms p50 / p95 | build | memory |",
        "|---|---|---|---|---|---|---|",
        row("FTS5 `bm25()`", fts_ms, fts_cpu, "-", "-"),
        row(
            "resident postings (numpy)",
            res_ms,
            res_cpu,
            f"{build_s:.2f} s ({build_cpu:.2f} s CPU)",
            f"{postings.nbytes() / 2**20:.1f} MiB arrays ({postings.nbytes() / args.chunks:.0f} B a chunk), "
            f"{len(postings.vocab)} terms",
        ),
        "",
        f"p50 ratio FTS5 / resident: {statistics.median(fts_ms) / statistics.median(res_ms):.1f}x wall, "
        f"{statistics.median(fts_cpu) / statistics.median(res_cpu):.1f}x CPU; "
        f"queries ranked alike (same scores rank for rank, 1e-9): {alike} of {len(queries)}",
    ]
    text = "\n".join(lines)
    print(text)
    if out := os.environ.get("OUT"):
        Path(out, "bench_lexical.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
