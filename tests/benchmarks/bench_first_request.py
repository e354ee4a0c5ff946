"""Benchmark: the first requests after warm-up against the steady state (issue 17: "the first request after
warm-up no slower than the rest"), Qwen3-0.6B shape, random weights, the (a) workload of ``bench_engine.py``.

    python tests/benchmarks/bench_first_request.py               # on the GPU machine
    python tests/benchmarks/bench_first_request.py --tiny --device cpu   # smoke run of the script itself

A script, not a test. One rerank ``Engine`` is built and warmed up; then passes of ``--requests`` requests
of one query x 50 pairs are timed one after another, end to end through the engine's queue: the first
requests after warm-up, the same requests again, new requests (new lengths, as new queries bring), new
requests with the runner's rounding of token counts off (``round_tokens`` 1: every batch a shape cuBLAS has
not seen), twice, and new requests with it on again. It prints each request's latency in every pass, the
allocator's reserved memory and how many CUDA graphs the runner holds: a first pass slower than the second
points at work the warm-up left for the first real shapes (graphs, plans, allocator growth), and the memory
and graph counts say which. Writes $OUT/bench_first_request.md when OUT is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.engine import Engine  # noqa: E402
from tests.benchmarks.bench_engine import TINY  # noqa: E402
from tests.benchmarks.engine_workloads import Lengths, log, random_qwen3, rerank_engine, sync  # noqa: E402
from tests.support.models import QWEN3_06B  # noqa: E402


def reserved_mib(device: str) -> float:
    return torch.cuda.memory_reserved() / 2**20 if device.startswith("cuda") else 0.0


def graphs(engine: Engine) -> int:
    """CUDA graphs the runner holds (0 where it keeps none or does not say)."""
    held = getattr(engine.runner, "graphs", None)
    return len(held) if held is not None else 0


def timed(engine: Engine, requests: list, device: str) -> list[float]:
    out = []
    for seqs in requests:
        sync(device)
        started = time.perf_counter()
        engine.run(seqs)
        sync(device)
        out.append((time.perf_counter() - started) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny config (smoke test of the script)")
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--budget", type=int, default=32768)
    args = ap.parse_args()
    dev, cfg = args.device, TINY if args.tiny else QWEN3_06B
    causal = random_qwen3(cfg, dev)
    started = time.perf_counter()
    engine = rerank_engine(causal, dev, args.budget)
    engine.warm_up()
    warm_s = time.perf_counter() - started
    after_warm = reserved_mib(dev), graphs(engine)
    lengths = Lengths(None)

    def fresh() -> list:
        return [lengths.pairs(lengths.draw(50), cfg["vocab_size"]) for _ in range(args.requests)]

    runner = engine.runner
    rounded = runner.round_tokens
    requests = fresh()
    passes = {"first pass": timed(engine, requests, dev)}
    after_first = reserved_mib(dev), graphs(engine)
    passes["the same again"] = timed(engine, requests, dev)
    passes["new requests"] = timed(engine, fresh(), dev)
    runner.round_tokens = 1
    passes["new, token counts not rounded"] = timed(engine, fresh(), dev)
    passes["new, not rounded (again)"] = timed(engine, fresh(), dev)
    runner.round_tokens = rounded
    passes["new, rounded"] = timed(engine, fresh(), dev)
    after_all = reserved_mib(dev), graphs(engine)
    where = torch.cuda.get_device_name() if dev.startswith("cuda") else dev
    names = list(passes)
    rows = [
        f"{'tiny' if args.tiny else 'Qwen3-0.6B'} shape on {where}; "
        f"warm-up {warm_s:.1f} s; one query x 50 pairs, {args.requests} requests per pass, in this order; "
        f"the engine rounds eager batches to multiples of {rounded} tokens but where a pass says not",
        "",
        "| request | " + " | ".join(f"{n} ms" for n in names) + " |",
        "| --- |" + " ---: |" * len(names),
        *(
            f"| {i + 1} | " + " | ".join(f"{passes[n][i]:.1f}" for n in names) + " |"
            for i in range(args.requests)
        ),
        "| median | " + " | ".join(f"{np.median(passes[n]):.1f}" for n in names) + " |",
        "",
        f"reserved MiB / CUDA graphs: after warm-up {after_warm[0]:.0f} / {after_warm[1]}, after the first "
        f"pass {after_first[0]:.0f} / {after_first[1]}, at the end {after_all[0]:.0f} / {after_all[1]}",
    ]
    text = "\n".join(rows)
    log("done")
    print(text, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_first_request.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
