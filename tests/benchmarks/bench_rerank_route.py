"""Benchmark: what the rerank route adds over the engine (issue 15: "rerank route overhead over the engine
<= 5 ms p50"), one client, one query x 50 documents of ~300 tokens, Qwen3-Reranker-0.6B shape.

    python tests/benchmarks/bench_rerank_route.py --out bench_rerank_route_h200.md   # on the GPU machine
    python tests/benchmarks/bench_rerank_route.py --tiny --device cpu --iters 5     # smoke run of the script
    python tests/benchmarks/bench_rerank_route.py --host-only --out bench_rerank_route_host_cpu.md  # no GPU

A script, not a test. The same requests (``--requests`` queries, each with 50 documents drawn from the
sample prose) go through each step, one at a time, ``--iters`` rounds after one unmeasured round:

- ``engine.run``: the engine alone, on the token ids the reranker builds for the request (built beforehand);
- ``prepare_windows``: the reranker's template and tokenization of the 50 (query, document) bodies;
- ``fit_documents``: the route's cap check (pieces per document, the token count of the usage);
- ``EngineReranker.rank``: the in-process call the API's search makes (template, tokenization, engine);
- ``POST /v1/rerank``: the same request over HTTP to a ``sieve rerank-server`` process on the same device
  (keep-alive; parse, caps, the inference queue, the thread pool, the engine, JSON).

``--host-only`` measures the route's own work on any machine: the reranker's engine is replaced, in this
process and in the server (this file with ``--serve-null``: the rerank server's app under uvicorn, as ``sieve
rerank-server`` serves it), by one that computes nothing and answers zeros at once. What is left is the
host's share of the route: template and tokenization, the caps, HTTP and JSON, the thread pool.

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
import types
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


class NullEngine:
    """An engine that computes nothing (``--host-only``): every sequence's margin is 0, at once."""

    head_token_ids: tuple[int, int] | None = None
    precision = types.SimpleNamespace(used="none", reason="bench_rerank_route --host-only: no engine")

    def __init__(self) -> None:
        from engine.engine import EngineStats

        self.stats = EngineStats()

    def warm_up(self) -> None:
        pass

    def run(self, sequences: Any, timeout: float | None = None) -> np.ndarray:
        return np.zeros(len(sequences), dtype=np.float32)

    def close(self) -> None:
        pass


def null_reranker(model_dir: Path) -> Any:
    """The Qwen3-Reranker of ``model_dir`` on the engine, with ``NullEngine`` in place of its engine."""
    from reranking import RerankSettings, make_reranker

    reranker: Any = make_reranker(RerankSettings(backend="qwen3-engine", model=str(model_dir), device="cpu"))
    reranker.engine = NullEngine()
    reranker.warm_up()
    return reranker


def serve_null(model_dir: Path, port: int) -> None:
    """The rerank server's app on ``null_reranker`` (``--serve-null``), served as ``sieve rerank-server``."""
    import uvicorn

    from api.rerank_server import create_rerank_app

    uvicorn.run(create_rerank_app(reranker=null_reranker(model_dir)), host="127.0.0.1", port=port)


def start_null_server(model_dir: Path, home: Path) -> Any:
    from api.cli.stack import free_port
    from tests.benchmarks.bench_rerank_pool import base_env, spawn

    port = free_port()
    argv = [sys.executable, __file__, "--serve-null", "--model", str(model_dir), "--port", str(port)]
    return spawn("null-server", argv, base_env(), home, port)


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
        "--host-only", action="store_true", help="an engine that computes nothing (no GPU needed)"
    )
    ap.add_argument("--serve-null", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--py-spy",
        type=Path,
        help="folder: py-spy profiles (collapsed stacks) of this process's rank loop and of the server's",
    )
    args = ap.parse_args()
    if args.serve_null:
        serve_null(args.model, args.port)
        return
    if args.host_only:
        args.tiny, args.device = True, "cpu"  # the weights are never used
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
        if args.host_only:
            reranker: Any = null_reranker(model_dir)
        else:
            settings = RerankSettings(backend="qwen3-engine", model=str(model_dir), device=args.device)
            reranker = make_reranker(settings)
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
        servers = (
            [start_null_server(model_dir, home)]
            if args.host_only
            else start_servers([args.device], model_dir, {}, home)
        )
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
        (
            "The route's host work alone (--host-only): Qwen3-Reranker's template and tokenizer, an engine "
            "that computes nothing (zeros at once) in this process and in the server; "
            if args.host_only
            else f"{'Toy-size' if args.tiny else 'Qwen3-Reranker-0.6B-shape'} model, random weights, "
            f"RERANK_BACKEND=qwen3-engine, on {where}; "
        )
        + f"{platform.machine()}, {os.cpu_count()} CPUs. "
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
