"""Benchmark: what the rerank route adds over the engine (issue 15: "rerank route overhead over the engine
<= 5 ms p50"), one client, one query x 50 documents of ~300 tokens, Qwen3-Reranker-0.6B shape.

    python tests/benchmarks/bench_rerank_route.py --out bench_rerank_route_h200.md   # on the GPU machine
    python tests/benchmarks/bench_rerank_route.py --tiny --device cpu --iters 5     # smoke run of the script

A script, not a test. The same requests (``--requests`` queries, each with 50 documents drawn from the
sample prose) go through each step, one at a time, ``--iters`` rounds after one unmeasured round:

- ``engine.run``: the engine alone, on the token ids the reranker builds for the request (built beforehand);
- ``prepare_windows``: the reranker's template and tokenization of the 50 (query, document) bodies;
- ``fit_documents``: the route's cap check (pieces per document, the token count of the usage);
- ``EngineReranker.rank``: the in-process call the API's search makes (template, tokenization, engine);
- ``POST /v1/rerank``: the same request over HTTP to a ``sieve rerank-server`` process on the same device
  (keep-alive; parse, caps, the inference queue, the thread pool, the engine, JSON).

"over the engine" is each step's p50 minus the engine's. Both processes hold a copy of the model; only
one of them computes at a time (the in-process engine is closed before the server starts). Prints a
Markdown table; ``--out NAME`` writes it under tests/benchmarks/results/ and to $OUT when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from tests.benchmarks.bench_overload import QUERIES  # noqa: E402
from tests.benchmarks.bench_rerank_pool import (  # noqa: E402
    build_model,
    log,
    make_documents,
    start_servers,
    wait_ready,
)
from tests.benchmarks.profiling import spied  # noqa: E402
from tests.benchmarks.tables import save  # noqa: E402


def timed(fn: Any, items: list[Any], rounds: int) -> list[float]:
    """Milliseconds of ``fn(item)`` for each item, ``rounds`` times, after one unmeasured round."""
    for item in items:
        fn(item)
    out = []
    for _ in range(rounds):
        for item in items:
            started = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - started) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer Qwen3 (CPU smoke runs)")
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--doc-tokens", type=int, default=300)
    ap.add_argument("--requests", type=int, default=8, help="distinct queries (each its own 50 documents)")
    ap.add_argument("--iters", type=int, default=10, help="rounds over the requests")
    ap.add_argument("--out", default="")
    ap.add_argument(
        "--py-spy",
        type=Path,
        help="folder: py-spy profiles (collapsed stacks) of this process's rank loop and of the server's",
    )
    args = ap.parse_args()
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)

    import httpx

    from api.compat import fit_documents
    from api.settings import ApiSettings
    from reranking import RerankSettings, make_reranker

    home = Path(tempfile.mkdtemp(prefix="bench-rerank-route-"))
    log("building the model folder (random weights)")
    model_dir = build_model(home / "reranker", args.tiny)
    docs, mean_tokens = make_documents(model_dir, args.doc_tokens, 400)
    rng = random.Random(1)
    requests = [
        (f"{QUERIES[i % len(QUERIES)]} ({i})", rng.sample(docs, args.docs)) for i in range(args.requests)
    ]

    servers: list[Any] = []
    try:
        settings = RerankSettings(backend="qwen3-engine", model=str(model_dir), device=args.device)
        reranker: Any = make_reranker(settings)
        started = time.perf_counter()
        reranker.warm_up()
        log(f"in-process engine warm in {time.perf_counter() - started:.1f} s")
        template, engine = reranker._template, reranker.engine
        seqs = {q: [s for doc in template.prepare_windows(q, d)[0] for s in doc] for q, d in requests}
        pair_tokens = np.mean([len(s) for q in seqs for s in seqs[q]])
        cap = ApiSettings().max_tokens_per_doc
        steps: dict[str, list[float]] = {}
        log("timing in process")
        steps["engine.run (token ids built beforehand)"] = timed(
            lambda r: engine.run(seqs[r[0]]), requests, args.iters
        )
        steps["prepare_windows (template + tokenization)"] = timed(
            lambda r: template.prepare_windows(r[0], r[1]), requests, args.iters
        )
        steps["fit_documents (the route's cap check)"] = timed(
            lambda r: fit_documents(r[0], r[1], cap, truncate=True), requests, args.iters
        )
        with spied(os.getpid(), args.py_spy and args.py_spy / "rank_in_process.txt", rate=500):
            steps["EngineReranker.rank (in process)"] = timed(
                lambda r: reranker.rank(r[0], r[1]), requests, args.iters
            )
        engine.close()  # the server's engine computes alone
        log("starting a rerank server on the same device")
        servers = start_servers([args.device], model_dir, {}, home)
        wait_ready(servers, "/ready", 900)
        log("timing POST /v1/rerank")
        bodies = {q: json.dumps({"query": q, "documents": d}).encode() for q, d in requests}
        with httpx.Client(base_url=servers[0].url, timeout=60) as client:

            def post(r: tuple[str, list[str]]) -> None:
                answer = client.post(
                    "/v1/rerank", content=bodies[r[0]], headers={"Content-Type": "application/json"}
                )
                answer.raise_for_status()

            with spied(servers[0].popen.pid, args.py_spy and args.py_spy / "rerank_server.txt", rate=500):
                steps["POST /v1/rerank (sieve rerank-server, keep-alive)"] = timed(post, requests, args.iters)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)

    base = float(np.percentile(steps["engine.run (token ids built beforehand)"], 50))
    where = args.device
    if args.device.startswith("cuda"):
        import torch

        where = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    lines = [
        f"# bench_rerank_route: one client, one query x {args.docs} documents of ~{mean_tokens:.0f} tokens "
        f"(pairs of {pair_tokens:.0f} tokens with the template)",
        "",
        f"{'Toy-size' if args.tiny else 'Qwen3-Reranker-0.6B-shape'} model, random weights, "
        f"RERANK_BACKEND=qwen3-engine, on {where}; {platform.machine()}, {os.cpu_count()} CPUs. "
        f"{args.requests} requests x {args.iters} rounds per step, after one unmeasured round; ms.",
        "",
        "| step | p50 | p95 | mean | over the engine (p50) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, ms in steps.items():
        p50 = float(np.percentile(ms, 50))
        over = f"{p50 - base:+.1f}" if name.startswith(("EngineReranker", "POST")) else ""
        lines.append(f"| {name} | {p50:.1f} | {np.percentile(ms, 95):.1f} | {np.mean(ms):.1f} | {over} |")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        save(text, args.out)


if __name__ == "__main__":
    main()
