"""Ingest throughput and search latency on SciFact, through the real embedded stack.

Starts its own stack (Redis, Milvus Lite server, one Celery worker, the API) in a temporary folder, uploads
every SciFact abstract as a .txt file over the API, waits for the jobs, then times search over queries.
Prints a Markdown table. Not a test: run it by hand.

    .venv/bin/python tests/benchmarks/bench_scifact.py [--data DIR] [--limit N] [--queries 100]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

from api.cli.client import SieveClient
from api.cli.stack import Stack, free_port


def load_corpus(folder: Path, limit: int | None) -> list[tuple[str, str]]:
    path = folder / "corpus.jsonl.gz"
    opener = gzip.open if path.exists() else open
    rows = []
    with opener(path if path.exists() else folder / "corpus.jsonl", "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            rows.append((str(doc["_id"]), f"{doc.get('title', '')}\n\n{doc['text']}".strip()))
            if limit and len(rows) >= limit:
                break
    return rows


def load_queries(folder: Path, n: int) -> list[str]:
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh][:n]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "../shared/data/scifact"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N abstracts")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100, help="files per upload request")
    args = parser.parse_args()
    if not (args.data / "queries.jsonl").exists():
        raise SystemExit(f"SciFact not found at {args.data}: pass --data")

    corpus = load_corpus(args.data, args.limit)
    queries = load_queries(args.data, args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        home, docs = Path(tmp) / "stack", Path(tmp) / "docs"
        docs.mkdir()
        paths = []
        for doc_id, text in corpus:
            path = docs / f"{doc_id}.txt"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        stack = Stack(
            home=home,
            redis_port=free_port(),
            milvus_port=free_port(),
            api_port=free_port(),
            # Every search computed (no result cache); no rate limit on the bulk upload.
            extra_env={
                "API_KEYS": json.dumps({"bench": "bench"}),
                "API_CACHE_TTL_S": "0",
                "API_RATE_LIMIT_PER_S": "0",
            },
        )
        t0 = time.perf_counter()
        stack.start()
        started = time.perf_counter() - t0
        try:
            client = SieveClient(stack.api_url, "bench", timeout=600)
            t0 = time.perf_counter()
            job_ids: list[str] = []
            for i in range(0, len(paths), args.batch):
                job_ids += [j["job_id"] for j in client.upload(paths[i : i + args.batch])["jobs"]]
            accepted = time.perf_counter() - t0
            jobs = client.wait(job_ids, timeout=7200)
            ingest_s = time.perf_counter() - t0
            chunks = sum(j["chunks_total"] for j in jobs if j["state"] == "done")
            failed = sum(j["state"] == "failed" for j in jobs)
            print(
                f"ingested {len(jobs)} documents ({failed} failed), {chunks} chunks in {ingest_s:.1f} s",
                flush=True,
            )

            client.search(queries[0])  # warm
            latencies, stage1 = [], []
            for q in queries:
                t = time.perf_counter()
                result = client.search(q, top_k=5, candidates=50)
                latencies.append((time.perf_counter() - t) * 1000)
                stage1.append(result["timings_ms"]["stage1"])
        finally:
            stack.stop()

    print("| measure | value |\n| --- | --- |")
    print(f"| stack start (Redis, Milvus Lite, worker, API ready) | {started:.1f} s |")
    print(f"| documents | {len(corpus)} ({failed} failed) |")
    print(f"| chunks | {chunks} |")
    print(f"| upload accepted (all files durable, jobs queued) | {accepted:.1f} s |")
    print(f"| ingest wall time (first upload → last job done) | {ingest_s:.1f} s |")
    print(f"| ingest throughput | {chunks / ingest_s:.1f} chunks/s |")
    print(
        f"| search p50 / p95 over {len(latencies)} queries (HTTP, end to end) | "
        f"{statistics.median(latencies):.1f} / {percentile(latencies, 95):.1f} ms |"
    )
    s1 = f"{statistics.median(stage1):.1f} / {percentile(stage1, 95):.1f} ms"
    print(f"| of which Milvus stage 1 p50 / p95 | {s1} |")


if __name__ == "__main__":
    main()
