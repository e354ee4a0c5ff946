"""Benchmark: the first requests after warm-up against the steady state (issue 17: "the first request after
warm-up no slower than the rest"), Qwen3-0.6B shape, random weights, the (a) workload of ``bench_engine.py``.

    python tests/benchmarks/bench_first_request.py               # on the GPU machine
    python tests/benchmarks/bench_first_request.py --tiny --device cpu   # smoke run of the script itself

A script, not a test. One rerank ``Engine`` is built and warmed up; then ``--requests`` requests of one query
x 50 pairs (new lengths each time, as new queries bring) are timed one after another, end to end through the
engine's queue, and then the same requests again. It prints each request's latency in both passes, the
allocator's reserved memory after warm-up and after each pass, and how many CUDA graphs the runner holds: a
first pass slower than the second points at work the warm-up left for the first real shapes (graphs, plans,
allocator growth), and the memory and graph counts say which. Writes $OUT/bench_first_request.md when OUT
is set.
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
    requests = [lengths.pairs(lengths.draw(50), cfg["vocab_size"]) for _ in range(args.requests)]
    first = timed(engine, requests, dev)
    after_first = reserved_mib(dev), graphs(engine)
    second = timed(engine, requests, dev)
    after_second = reserved_mib(dev), graphs(engine)
    where = torch.cuda.get_device_name() if dev.startswith("cuda") else dev
    rows = [
        f"{'tiny' if args.tiny else 'Qwen3-0.6B'} shape on {where}; "
        f"warm-up {warm_s:.1f} s; one query x 50 pairs, {args.requests} requests, then the same again",
        "",
        "| request | first pass ms | second pass ms |",
        "| --- | ---: | ---: |",
        *(f"| {i + 1} | {a:.1f} | {b:.1f} |" for i, (a, b) in enumerate(zip(first, second, strict=True))),
        f"| median | {np.median(first):.1f} | {np.median(second):.1f} |",
        "",
        f"reserved MiB / CUDA graphs: after warm-up {after_warm[0]:.0f} / {after_warm[1]}, after the first "
        f"pass {after_first[0]:.0f} / {after_first[1]}, after the second {after_second[0]:.0f} / "
        f"{after_second[1]}",
    ]
    text = "\n".join(rows)
    log("done")
    print(text, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_first_request.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
