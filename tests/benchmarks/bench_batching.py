"""Benchmark: how the engine's batcher fills its batches under concurrent rerank requests, on an emulated GPU
(no GPU needed), against the batcher as it was (a batch taken before a slot was free) in the same run.

    python tests/benchmarks/bench_batching.py                        # ~2 min on this CPU
    python tests/benchmarks/bench_batching.py --out bench_batching_cpu.md
    python tests/benchmarks/bench_batching.py --http --out bench_batching_http_cpu.md   # + over HTTP

A script, not a test. The requests are real: ``EngineReranker.rank`` of Qwen3-Reranker's template and real
tokenizer over one query x 50 documents of ~300 tokens (the shared head once per batch, as the engine computes
it), from ``--clients`` threads in a closed loop. The engine is the real ``engine.engine.Engine`` (its queue,
batcher and completer threads, its two in-flight slots); only its runner's ``run`` is replaced:

- the launch: ``--launches`` kernel launches on the batcher thread, each ``--launch-us`` of Python holding
  the GIL and then one small torch call (which lets go of the GIL and takes it back); the defaults, 450 x
  24 us, are the 0.6B engine's eager batch on the lent H200's host (11 ms to enqueue one query x 50 pairs,
  ``bench_engine.py``), and contention stretches them as it would the real ones;
- the device: one stream that runs each batch after the one before it (from its first launch on, so launches
  and compute overlap as on a GPU; never done before its last launch), for ``--fixed-ms`` plus its computed
  tokens at ``--rate`` tokens/s (defaults from ``bench_engine.py`` on the lent H200: 699k tokens/s at
  saturation, one query x 50 pairs in ~24 ms); a batch's completion event is that stream's finish time.

Variants: ``slot first`` (``engine/engine.py`` now: the batcher waits for a free in-flight slot, then takes
what is queued, up to the token budget) and ``batch first`` (before: it took what was queued, then waited for
a slot with it). Reported per variant and client count: answers/s, p50/p95 latency, requests and computed
tokens per batch, and the emulated device's busy share. ``--http`` adds the same requests as ``POST
/v1/rerank`` to the rerank server's app (``api.rerank_server.create_rerank_app``, under uvicorn, as ``sieve
rerank-server`` serves it: its caps, inference queue, thread pool and JSON) in a process of its own with the
emulated engine, from closed-loop clients on keep-alive connections (``tests/support/loadgen``) in this
process; answers other than 200 are counted, not timed. Prints a Markdown table; ``--out NAME`` writes it
under tests/benchmarks/results/ and to $OUT when OUT is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from engine.engine import Engine, _BatchClock, _on_device  # noqa: E402
from tests.benchmarks.bench_overload import QUERIES  # noqa: E402
from tests.benchmarks.bench_rerank_pool import build_model, log, make_documents  # noqa: E402
from tests.benchmarks.profiling import spied, summary  # noqa: E402
from tests.benchmarks.tables import save  # noqa: E402
from tests.support.loadgen import Client, Run, closed_loop, percentile  # noqa: E402


class Stream:
    """An emulated GPU stream: batches run one after another, each ``fixed + tokens / rate`` seconds."""

    def __init__(self, rate: float, fixed_s: float) -> None:
        self.rate, self.fixed_s = rate, fixed_s
        self.free_at = 0.0
        self.busy_s = 0.0
        self._lock = threading.Lock()

    def enqueue(self, tokens: int, launched_at: float) -> Done:
        """A batch whose launches began at ``launched_at`` and end now: it starts once the batch before it
        is done and its first kernel is launched, and ends no sooner than its last launch."""
        with self._lock:
            start = max(launched_at, self.free_at)
            seconds = self.fixed_s + tokens / self.rate
            self.free_at = max(start + seconds, time.perf_counter())
            self.busy_s += seconds
            return Done(self.free_at)


class Done:
    """A batch's completion event on ``Stream``."""

    def __init__(self, at: float) -> None:
        self.at = at

    def synchronize(self) -> None:
        left = self.at - time.perf_counter()
        if left > 0:
            time.sleep(left)


def python_work_for(seconds: float) -> int:
    """Iterations of an empty Python loop that take ``seconds`` on this machine, alone (best of 5)."""
    n = 100_000
    best = min(_timed_loop(n) for _ in range(5))
    return max(1, round(seconds / (best / n)))


def _timed_loop(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        pass
    return time.perf_counter() - started


def emulate(engine: Engine, stream: Stream, launches: int, launch_s: float) -> list[tuple[int, int]]:
    """Replace ``engine``'s runner's ``run`` with the launch and the emulated device; returns the list that
    each batch's (sequences, computed tokens) is appended to."""
    runner = engine.runner
    batches: list[tuple[int, int]] = []
    scratch = torch.zeros(64)
    spins = python_work_for(launch_s)

    def run(seqs: Any, prefix_of: Any = None) -> tuple[torch.Tensor, Done]:
        launched_at = time.perf_counter()
        for _ in range(launches):
            # the launch's Python (argument checks, views, the launcher): work, not time, so that waiting
            # for the GIL stretches it as it does a real launch
            for _ in range(spins):
                pass
            scratch.add_(1.0)  # the GIL let go and taken back
        tokens = sum(len(s) for s in seqs)
        batches.append((len(seqs), tokens))
        return torch.zeros(len(seqs)), stream.enqueue(tokens, launched_at)

    runner.run = run  # type: ignore[method-assign]
    return batches


VARIANTS = ("slot first (now)", "batch first (before)")
JSON = {"Content-Type": "application/json"}


class BatchFirst(Engine):
    """The batcher as it was: a batch taken from the queue first, then a slot waited for with it."""

    def _work(self, runner: Any, warmed: Any) -> None:
        with torch.inference_mode(), _on_device(runner.device):
            runner.warm_up(self.token_budget)
            warmed.set_result(None)
            while True:
                with self._cond:
                    while (self._paused or not self._pending) and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    parts = self._take_batch()
                self._inflight.acquire()
                seqs, prefix_of, order = self._segments(parts)
                clock = _BatchClock(runner.device)
                out, event = runner.run(seqs, prefix_of)
                clock.ran()
                served = sum(int(r.offsets[b] - r.offsets[a]) for r, a, b in parts)
                self._done.put((parts, order, out, (clock, event), (sum(len(s) for s in seqs), served)))


def measure(
    reranker: Any, requests: list[tuple[str, list[str]]], clients: int, seconds: float, stream: Stream
) -> dict[str, float]:
    """``clients`` threads ranking ``requests`` in a closed loop for ``seconds`` (after 1 s of warm-up)."""
    stop = threading.Event()
    measuring = threading.Event()
    latencies: list[float] = []

    def client(index: int) -> None:
        i = index
        while not stop.is_set():
            query, docs = requests[i % len(requests)]
            started = time.perf_counter()
            reranker.rank(query, docs)
            if measuring.is_set():
                latencies.append(time.perf_counter() - started)
            i += clients

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stats = reranker.engine.stats
    before = (stats.batches, stats.requests, stream.busy_s)
    measuring.set()
    started = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - started
    after = (stats.batches, stats.requests, stream.busy_s)
    stop.set()
    for t in threads:
        t.join(60)
    batches = max(1, after[0] - before[0])
    return {
        "qps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1e3,
        "p95": percentile(latencies, 95) * 1e3,
        "requests_per_batch": (after[1] - before[1]) / batches,
        "busy": min(1.0, (after[2] - before[2]) / elapsed),
    }


def emulated_reranker(model_dir: Path, variant: str, args: argparse.Namespace) -> tuple[Any, Stream, list]:
    """Qwen3-Reranker of ``model_dir`` on the engine (``variant``: "slot first" or "batch first"), its runner
    on the emulated device."""
    from reranking import RerankSettings, make_reranker

    reranker: Any = make_reranker(RerankSettings(backend="qwen3-engine", model=str(model_dir), device="cpu"))
    reranker.warm_up()
    engine = reranker.engine
    if variant.startswith("batch first"):  # the same settings, the old batcher
        engine.close()
        reranker.engine = engine = BatchFirst(
            str(model_dir), head="score", head_token_ids=engine.head_token_ids, device="cpu"
        )
        engine.warm_up()
    stream = Stream(args.rate, args.fixed_ms / 1e3)
    return reranker, stream, emulate(engine, stream, args.launches, args.launch_us / 1e6)


def serve(args: argparse.Namespace) -> None:
    """``--serve``: the rerank server's app on the emulated engine, under uvicorn."""
    import uvicorn

    from api.rerank_server import create_rerank_app

    reranker, _, _ = emulated_reranker(args.model, args.variant, args)
    uvicorn.run(create_rerank_app(reranker=reranker), host="127.0.0.1", port=args.port, log_level="warning")


def measure_http(
    url: str,
    requests: list[tuple[str, list[str]]],
    clients: int,
    seconds: float,
    spy: tuple[int, Path] | None,
) -> dict:
    """``clients`` closed-loop clients (``tests/support/loadgen``) posting ``requests`` to ``url``/v1/rerank
    for ``seconds`` after 1 s of warm-up, and the server's engine counters (``/metrics``) around them;
    ``spy``: (server pid, py-spy output file) recorded over those seconds."""
    import httpx

    from tests.benchmarks.profiling import engine_counters

    bodies = [json.dumps({"query": q, "documents": d}).encode() for q, d in requests]

    def counters() -> dict[str, float]:
        found = engine_counters(httpx.get(f"{url}/metrics").text)
        return next(iter(found.values()), {})

    async def load() -> tuple[Run, dict[str, float], dict[str, float]]:
        client = Client(url, JSON)
        try:
            await closed_loop(client, bodies, clients, 1.0, "/v1/rerank")
            with spied(*spy) if spy else contextlib.nullcontext():
                before = counters()
                run = await closed_loop(client, bodies, clients, seconds, "/v1/rerank")
                after = counters()
        finally:
            client.close()
        return run, before, after

    run, before, after = asyncio.run(load())
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = max(1.0, delta.get("batches", 0.0))
    return {
        "qps": run.throughput(),
        "p50": percentile(run.latencies(), 50),
        "p95": percentile(run.latencies(), 95),
        "requests_per_batch": delta.get("requests", 0.0) / batches,
        "tokens_per_batch": delta.get("tokens_computed", 0.0) / batches,
        "refused": len(run.answers) - len(run.ok()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,4,8,16,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=699_000.0, help="emulated device: computed tokens/s")
    ap.add_argument("--fixed-ms", type=float, default=2.0, help="emulated device: ms per batch on top")
    ap.add_argument("--launches", type=int, default=450, help="kernel launches per batch")
    ap.add_argument("--launch-us", type=float, default=24.0, help="Python time per launch, GIL held")
    ap.add_argument("--switch-ms", type=float, default=0.5, help="sys.setswitchinterval (the servers' 0.5)")
    ap.add_argument("--doc-tokens", type=int, default=300)
    ap.add_argument("--http", action="store_true", help="also POST /v1/rerank to the rerank server's app")
    ap.add_argument("--py-spy", type=Path, help="folder: py-spy of the server at each --http level")
    ap.add_argument("--out", default="")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default=VARIANTS[0], help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.setswitchinterval(args.switch_ms / 1e3)
    if args.serve:
        serve(args)
        return

    home = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    log("building the model folder (a tiny Qwen3 with the real tokenizer; its weights are never used)")
    model_dir = build_model(home / "reranker", True)
    docs, mean_tokens = make_documents(model_dir, args.doc_tokens, 400)
    rng = random.Random(1)
    requests = [(f"{QUERIES[i % len(QUERIES)]} ({i})", rng.sample(docs, 50)) for i in range(64)]
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    rows = []
    spies: list[tuple[str, str]] = []
    for variant in VARIANTS:
        for clients in levels:
            reranker, stream, batches = emulated_reranker(model_dir, variant, args)
            log(f"{variant}, in process, {clients} clients")
            m = measure(reranker, requests, clients, args.seconds, stream)
            computed = [t for _, t in batches[len(batches) // 4 :]] or [0]
            rows.append(
                f"| {variant} | in process | {clients} | {m['qps']:.1f} | {m['p50']:.1f} | {m['p95']:.1f} | "
                f"{m['requests_per_batch']:.2f} | {statistics.mean(computed):,.0f} | {m['busy']:.0%} | 0 |"
            )
            reranker.engine.close()
        if not args.http:
            continue
        from api.cli.stack import free_port
        from tests.benchmarks.bench_rerank_pool import base_env, spawn
        from tests.benchmarks.bench_rerank_pool import wait_ready as wait_servers

        port = free_port()
        argv = [sys.executable, __file__, "--serve", "--variant", variant, "--model", str(model_dir)]
        argv += ["--port", str(port), "--rate", str(args.rate), "--fixed-ms", str(args.fixed_ms)]
        argv += ["--launches", str(args.launches), "--launch-us", str(args.launch_us)]
        env = dict(base_env(), API_GIL_SWITCH_MS=f"{args.switch_ms:g}")  # the app sets it at start-up
        server = spawn("server", argv, env, home, port)
        try:
            wait_servers([server], "/ready", 300)
            for clients in levels:
                log(f"{variant}, over HTTP, {clients} clients")
                spy = None
                if args.py_spy:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    name = variant.split(" (")[0].replace(" ", "_")
                    spy = (server.popen.pid, args.py_spy / f"server_{name}_{clients}_clients.txt")
                m = measure_http(server.url, requests, clients, args.seconds, spy)
                if spy and spy[1].exists():
                    title = f"{variant}, {clients} clients ({spy[1].name})"
                    spies.append((title, summary(spy[1], args.seconds)))
                rows.append(
                    f"| {variant} | POST /v1/rerank | {clients} | {m['qps']:.1f} | {m['p50']:.1f} | "
                    f"{m['p95']:.1f} | {m['requests_per_batch']:.2f} | {m['tokens_per_batch']:,.0f} | - | "
                    f"{m['refused']} |"
                )
        finally:
            server.popen.terminate()
            server.popen.wait(30)
    text = "\n".join(
        [
            "# bench_batching: the engine's batches under concurrent rerank requests, on an emulated GPU",
            "",
            f"Requests: one query x 50 documents of ~{mean_tokens:.0f} tokens (Qwen3-Reranker's template and "
            "real tokenizer), closed loop per client thread: `EngineReranker.rank` in process, or POST "
            "/v1/rerank to the rerank server's app in a process of its own (keep-alive); "
            f"{args.seconds:g} s measured after 1 s. Emulated device: {args.rate / 1e3:.0f}k computed "
            f"tokens/s + {args.fixed_ms:g} ms per batch, one stream; {args.launches} launches of "
            f"{args.launch_us:g} us per batch on the batcher thread; GIL switch interval "
            f"{args.switch_ms:g} ms; engine token budget 32,768, two batches in flight. "
            f"{platform.machine()}, {os.cpu_count()} CPUs. Latency in ms at the caller.",
            "",
            "| batcher | path | clients | answers/s | p50 | p95 | requests per batch | computed tokens per "
            "batch | device busy | refused |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            *[line for title, table in spies for line in ("", f"The server's threads: {title}", "", table)],
            "",
            "Command: `python tests/benchmarks/bench_batching.py"
            + (" --http" if args.http else "")
            + (f" --out {args.out}`" if args.out else "`"),
        ]
    )
    print(text)
    if args.out:
        log(f"wrote {save(text, args.out)}")


if __name__ == "__main__":
    main()
