"""Benchmark: /v1/search latency with and without the Redis result cache, on the real store and embedder.

    .venv/bin/python tests/benchmarks/bench_cache.py [--rate 20] [--requests 200] [--pool 20]

A script, not a test. Starts its own Redis (a free port, append-only file, as the embedded stack runs it)
and a Milvus Lite server in a temporary folder, builds the API in-process (Starlette's TestClient: ASGI calls,
no socket) with the real MiniLM embedder, the Milvus store and the rerank backend of RERANK_* (default: none),
uploads the sample documents (api/sample) and runs the ingestion jobs in-process. Then it sends
``--requests`` searches at a fixed rate, cycling through a pool of ``--pool`` queries, twice in one run: with
the cache off (API_CACHE_TTL_S=0) and on (the first pass over the pool misses, the rest hit). Latency is taken
at the client, from sending a request to having its answer; the route's own time (``timings_ms.total``: the
search, or the cache lookup of a hit) is shown apart. Prints a Markdown table; writes it to
$OUT/bench_cache.md when OUT is set.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from api.cli.stack import Stack, free_port  # noqa: E402
from api.resources import Resources, Settings, build_resources  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from ingestion import pipeline  # noqa: E402
from ingestion.settings import IngestSettings  # noqa: E402
from reranking import RerankSettings  # noqa: E402
from retrieval import RetrievalSettings  # noqa: E402
from tests.support.fakes import RecordingSender  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "api" / "sample"
AUTH = {"Authorization": "Bearer bench-key"}
QUERIES = [
    "how do plants turn sunlight into sugar",
    "what does chlorophyll absorb",
    "why do earthquakes happen at plate boundaries",
    "how fast do tectonic plates move",
    "who invented the printing press with movable type",
    "how did printing change the spread of books in Europe",
    "how does public key encryption work",
    "what is a digital signature",
    "what does the rust borrow checker prevent",
    "can you have two mutable references in rust",
    "why does sourdough rise without commercial yeast",
    "what microbes live in a sourdough starter",
    "how do vaccines train the immune system",
    "what are memory B cells",
    "how does water evaporate and return as rain",
    "what drives the water cycle",
    "what does the Cache-Control header do",
    "when is a cached HTTP response stale",
    "what is an ETag used for",
    "how long does bread dough ferment",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ingest(client: TestClient, res: Resources) -> int:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(SAMPLE.iterdir()) if p.is_file()]
    r = client.post("/v1/documents", files=files, headers=AUTH)
    r.raise_for_status()
    sender: RecordingSender = res.uploads.sender  # type: ignore[assignment] # built with a RecordingSender
    chunks = 0
    for _, (job_id,) in sender.sent:
        job = res.records.get_job(job_id)
        chunks += pipeline.ingest(
            job.document_version,
            records=res.records,
            store=res.models.current().store,
            embedder=res.models.current().embedder,
            settings=res.settings.ingest,
        )
    sender.sent.clear()
    return chunks


def run(client: TestClient, queries: list[str], *, rate: float, requests: int) -> list[dict[str, Any]]:
    """``requests`` searches, request i sent at start + i / rate (at once if the previous one ran late)."""
    out: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        query = queries[i % len(queries)]
        sent = time.perf_counter()
        r = client.post("/v1/search", json={"query": query, "top_k": 5}, headers=AUTH)
        elapsed = (time.perf_counter() - sent) * 1000
        r.raise_for_status()
        body = r.json()
        server = body["timings_ms"]["total"]
        out.append(
            {"query": query, "ms": elapsed, "server": server, "cached": body["cached"], "hits": body["hits"]}
        )
    out[-1]["wall_s"] = time.perf_counter() - start
    return out


def row(label: str, samples: list[float]) -> str:
    if not samples:
        return f"| {label} | 0 | - | - | - | - |"
    return (
        f"| {label} | {len(samples)} | {percentile(samples, 50):.2f} | {percentile(samples, 95):.2f} | "
        f"{percentile(samples, 99):.2f} | {statistics.fmean(samples):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pool", type=int, default=20, help="distinct queries, repeated in turn")
    parser.add_argument("--warmup", type=int, default=10, help="untimed searches first (cache off)")
    args = parser.parse_args()
    queries = QUERIES[: args.pool]

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(home=Path(tmp) / "stack", redis_port=free_port(), milvus_port=free_port())
        try:
            stack.start_redis()
            stack.start_milvus()
            settings = Settings(
                api=ApiSettings(
                    keys={"bench-key": "bench"}, rate_limit_per_s=0, cache_ttl_s=300, rerank_gate="always"
                ),
                ingest=IngestSettings(redis_url=stack.redis_url, data_dir=Path(tmp) / "files"),
                retrieval=RetrievalSettings(milvus_uri=stack.milvus_uri, collection="bench_cache"),
                rerank=RerankSettings(),
            )
            holder: dict[str, Resources] = {}

            def factory(s: Settings) -> Resources:
                holder["res"] = build_resources(s, sender=RecordingSender())
                return holder["res"]

            with TestClient(create_app(settings, resources_factory=factory)) as client:
                res = holder["res"]
                chunks = ingest(client, res)
                res.search.cache.ttl_s = 0
                run(client, queries, rate=1000, requests=args.warmup)
                off = run(client, queries, rate=args.rate, requests=args.requests)
                res.search.cache.ttl_s = 300
                res.records.bump_index_version("bench")  # start the cached run with nothing cached
                on = run(client, queries, rate=args.rate, requests=args.requests)
                floor = []
                for _ in range(args.requests):
                    sent = time.perf_counter()
                    client.get("/health").raise_for_status()
                    floor.append((time.perf_counter() - sent) * 1000)
                    time.sleep(1 / args.rate)
                names = (res.models.current().embedder.name, res.models.current().reranker.name)
        finally:
            stack.stop()

    computed = {r["query"]: r["hits"] for r in off}
    same = all(r["hits"] == computed[r["query"]] for r in on)
    hits = [r["ms"] for r in on if r["cached"]]
    misses = [r["ms"] for r in on if not r["cached"]]
    documents = len(list(SAMPLE.iterdir()))
    lines = [
        f"Search latency, cache off vs on: {args.requests} requests at {args.rate:g}/s over {len(queries)} "
        f"queries, top_k 5, candidates 50; {chunks} chunks of {documents} sample documents in Milvus Lite; "
        f"embedder {names[0]}, reranker {names[1]}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end. Milliseconds at the "
        "client (in-process ASGI) unless marked route.",
        "",
        "| requests | n | p50 ms | p95 ms | p99 ms | mean ms |",
        "| --- | --- | --- | --- | --- | --- |",
        row("cache off: every search computed", [r["ms"] for r in off]),
        row("cache on: all requests", [r["ms"] for r in on]),
        row("cache on: misses (computed, then stored)", misses),
        row("cache on: hits", hits),
        row("GET /health: the in-process HTTP floor", floor),
        row("route only, cache off: the search", [r["server"] for r in off]),
        row("route only, cache on: a hit's lookup", [r["server"] for r in on if r["cached"]]),
        "",
        f"Cache-hit p50 {percentile(hits, 50):.2f} ms / p99 {percentile(hits, 99):.2f} ms vs search p50 "
        f"{percentile([r['ms'] for r in off], 50):.2f} ms without the cache "
        f"({percentile([r['ms'] for r in off], 50) / percentile(hits, 50):.1f}x). Achieved rate: "
        f"{args.requests / off[-1]['wall_s']:.1f}/s off, {args.requests / on[-1]['wall_s']:.1f}/s on. "
        f"Cached answers identical to computed ones: {'yes' if same else 'NO'}.",
    ]
    table = "\n".join(lines)
    print(table)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_cache.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
