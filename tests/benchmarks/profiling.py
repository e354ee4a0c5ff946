"""What a benchmark records beside its timings: py-spy profiles of a process, summarised, and the engine's
counters from a service's ``GET /metrics`` (``sieve_engine_*``), turned into per-level rows.

- ``spied(pid, out)``: ``py-spy record`` of one process (every thread, raw collapsed stacks) while a block
  runs; nothing when py-spy is not installed.
- ``summary(path, seconds)``: per thread, the share of the recording it was on a CPU (py-spy samples only
  threads that are not idle: a thread near 100 % is the bottleneck), and its busiest frames.
- ``engine_counters(text)`` and ``engine_row``: batches/s, requests and tokens per batch, computed tokens/s
  and the share of the time the device had a batch, between two scrapes.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SPY_RATE = 250  # samples a second


@contextlib.contextmanager
def spied(pid: int, out: Path | None, rate: int = SPY_RATE) -> Iterator[bool]:
    """``py-spy record`` of ``pid`` (every thread, its own stacks, raw collapsed format) while the block runs,
    written to ``out``; yields whether it records (False when ``out`` is None or py-spy is missing)."""
    exe = shutil.which("py-spy")
    if out is None or exe is None:
        yield False
        return
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--rate", str(rate)]
    spy = subprocess.Popen([*argv, "--nonblocking", "-o", str(out)], stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    try:
        yield True
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


THREAD = re.compile(r"^thread \(\d+\): (.*)$|^thread \((\d+)\)$")
FRAME = re.compile(r"^(.*) \((.*?):\d+\)$")


def summary(path: Path, seconds: float, rate: int = SPY_RATE, frames: int = 6) -> str:
    """A Markdown table of a raw py-spy file: per thread kind (threads of one name pooled, with their count),
    its CPU share of ``seconds`` of recording, and its ``frames`` busiest functions (own time, as a share of
    the thread's samples)."""
    per_thread: collections.Counter[str] = collections.Counter()
    threads: dict[str, set[str]] = collections.defaultdict(set)
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        at = next((i for i, part in enumerate(parts[:2]) if THREAD.match(part)), None)
        if at is None or len(parts) <= at + 1:
            continue
        name = parts[at]
        m = THREAD.match(name)
        kind = (m.group(1) if m else None) or "(unnamed)"
        threads[kind].add(name)
        per_thread[kind] += int(count)
        leaf = FRAME.match(parts[-1])
        where = f"{leaf.group(1)} ({Path(leaf.group(2)).name})" if leaf else parts[-1]
        own[kind][where] += int(count)
    lines = [
        f"py-spy, {rate} samples/s over {seconds:.1f} s; CPU: the share of that time each thread kind was "
        "running (summed over its threads); its busiest functions by own samples.",
        "",
        "| thread | threads | CPU | busiest (share of its samples) |",
        "| --- | ---: | ---: | --- |",
    ]
    for kind, samples in per_thread.most_common():
        top = ", ".join(f"{f} {n / samples:.0%}" for f, n in own[kind].most_common(frames))
        share = samples / rate / seconds
        lines.append(f"| {kind} | {len(threads[kind])} | {share:.0%} | {top} |")
    return "\n".join(lines)


COUNTER = re.compile(r'^sieve_engine_(\w+)_total\{(?:kind="(\w+)",)?model="(\w+)"\} (\S+)$', re.MULTILINE)


def engine_counters(text: str) -> dict[str, dict[str, float]]:
    """``sieve_engine_*_total`` of a ``/metrics`` text: model -> counter (``tokens_computed``...) -> value."""
    out: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for name, kind, model, value in COUNTER.findall(text):
        out[model][f"{name}_{kind}" if kind else name] = float(value)
    return dict(out)


ENGINE_HEAD = (
    "| clients | model (process) | batches/s | requests per batch | sequences per batch | "
    "computed tokens per batch | computed tokens/s | device busy |"
)


def engine_row(label: str, where: str, before: dict[str, float], after: dict[str, float],
               seconds: float) -> str:  # fmt: skip
    """One row of ``ENGINE_HEAD`` from two scrapes ``seconds`` apart (a dash where no batch ran)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = d.get("batches", 0.0)
    if batches <= 0:
        return f"| {label} | {where} | 0 | - | - | - | - | - |"
    cells = [
        f"{batches / seconds:.1f}",
        f"{d.get('requests', 0.0) / batches:.1f}",
        f"{d.get('sequences', 0.0) / batches:.0f}",
        f"{d.get('tokens_computed', 0.0) / batches:,.0f}",
        f"{d.get('tokens_computed', 0.0) / seconds / 1e3:,.0f}k",
        f"{d.get('device_seconds', 0.0) / seconds:.0%}",
    ]
    return f"| {label} | {where} | " + " | ".join(cells) + " |"
