"""Benchmark: how threads busy in Python slow a thread that issues many short GIL-releasing calls — the
engine's batcher, which launches a batch's kernels one torch call at a time (each call lets go of the GIL and
takes it back) while the same process parses requests, builds prompts and tokenizes in other threads — and
what ``sys.setswitchinterval`` changes.

    python tests/benchmarks/bench_gil.py                       # on this CPU, ~1 min (12 rows of 4 s)
    python tests/benchmarks/bench_gil.py --out bench_gil_cpu.md

A script, not a test. It needs no GPU: a "batch" is ``--calls`` torch calls on small CPU tensors (a few µs
each, like an asynchronous kernel launch; every torch call releases the GIL), run by one thread for
``--seconds``. Beside it, ``contenders`` threads each loop on the route's own Python work
(``count_pieces`` and the Qwen3-Reranker prompt of 50 documents, ~1-5 ms holding the GIL), resting between
turns so each is busy ``--duty`` of the time (a server under load: requests arrive, are parsed and
tokenized, then wait). CPython hands the GIL to a waiting thread only when the holder releases it or after
the switch interval (5 ms by default): a thread that gives it back hundreds of times a batch may wait that
long to get it back, each time, while another thread computes in Python.

Reported per (switch interval, contenders): the batcher's milliseconds per batch (median and p90) and its
slowdown against the same interval without contenders, and the contenders' turns per second (what a shorter
interval costs them). Prints a Markdown table; ``--out NAME`` writes it under tests/benchmarks/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tests.benchmarks.tables import save  # noqa: E402


def route_work() -> tuple[str, list[str]]:
    """A query and 50 documents of ~230 words (the rerank route's input)."""
    words = ["cell", "protein", "gene", "expression", "binding", "receptor", "signal", "pathway", "tumour"]
    docs = [" ".join(words[(i + j) % len(words)] for j in range(230)) + f" ({i})." for i in range(50)]
    return "which receptor binds the protein in tumour cells?", docs


def contender(stop: threading.Event, duty: float, turns: list[int], index: int) -> None:
    from api.compat import count_pieces

    query, docs = route_work()
    prompt = "<|im_start|>system\nJudge whether the Document meets the requirements.<|im_end|>\n"
    while not stop.is_set():
        started = time.perf_counter()
        sum(count_pieces(d) for d in docs)
        "".join(f"{prompt}<Query>: {query}\n<Document>: {d}<|im_end|>" for d in docs).split()
        busy = time.perf_counter() - started
        turns[index] += 1
        if duty < 1.0:
            time.sleep(busy * (1.0 - duty) / duty)


def batcher(
    stop: threading.Event, calls: int, device_ms: float, times: list[float], batches: list[int]
) -> None:
    x, y, z = torch.ones(64), torch.ones(64), torch.empty(64)
    while not stop.is_set():
        started = time.perf_counter()
        for _ in range(calls):
            torch.add(x, y, out=z)
        times.append((time.perf_counter() - started) * 1e3)
        batches[0] += 1
        # the device computes the batch (GIL released); the next launch starts as it ends, or at once when
        # the launches took longer than the device (they did not keep up)
        time.sleep(max(0.0, device_ms / 1e3 - (time.perf_counter() - started)))


def measure(
    interval_ms: float, contenders: int, args: argparse.Namespace
) -> tuple[list[float], float, float]:
    """(the batcher's ms of launches per batch, its batches per second, the contenders' turns per second)."""
    sys.setswitchinterval(interval_ms / 1e3)
    stop = threading.Event()
    times: list[float] = []
    batches = [0]
    turns = [0] * contenders
    threads = [
        threading.Thread(target=contender, args=(stop, args.duty, turns, i), daemon=True)
        for i in range(contenders)
    ]
    threads.append(
        threading.Thread(target=batcher, args=(stop, args.calls, args.device_ms, times, batches), daemon=True)
    )
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    return times[1:] or times, batches[0] / args.seconds, sum(turns) / args.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=450, help="torch calls a batch (28 layers x ~16)")
    ap.add_argument("--contenders", default="0,4,8,16", help="threads busy in Python")
    ap.add_argument("--intervals", default="5,1,0.5", help="switch intervals to try, ms (5: CPython's)")
    ap.add_argument("--duty", type=float, default=0.1, help="share of the time each contender computes")
    ap.add_argument(
        "--device-ms", type=float, default=3.0, help="the device's time a batch (the batcher waits for it)"
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="per setting")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    default = sys.getswitchinterval()
    rows = []
    try:
        for interval in (float(i) for i in args.intervals.split(",")):
            alone = None
            for n in (int(c) for c in args.contenders.split(",")):
                times, rate, turns = measure(interval, n, args)
                p50 = statistics.median(times)
                alone = p50 if n == 0 else alone
                p90 = sorted(times)[int(0.9 * (len(times) - 1))]
                slow = f"{p50 / alone:.1f}x" if alone else "-"
                rows.append(
                    f"| {interval:g} | {n} | {p50:.2f} | {p90:.2f} | {slow} | {rate:.0f} | {turns:.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    finally:
        sys.setswitchinterval(default)
    lines = [
        f"# bench_gil: a batcher of {args.calls} torch calls a batch beside threads busy in Python",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}; contenders busy {args.duty:.0%} of the time (count_pieces and the prompt of "
        f"50 documents a turn); a batch: {args.calls} calls, then the device's {args.device_ms:g} ms (the "
        f"next batch launches when the device is done); {args.seconds:g} s per row. The batcher's ms of "
        "launches per batch, their slowdown against no contender at the same interval, its batches per "
        "second (the device's throughput), and the contenders' turns per second.",
        "",
        "| switch interval (ms) | contenders | launches p50 (ms) | launches p90 (ms) | slowdown "
        "| batches/s | contender turns/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        save(text, args.out)


if __name__ == "__main__":
    main()
