"""What is watched for the whole run, from a separate process (so that the suite's own load does not slow it):

- a /health prober: one ``GET /health`` every 100-200 ms, open loop (a stalled API does not pause the
  probing; each probe waits up to 30 s), latency and status of each;
- an RSS sampler: every 0.5 s, ``VmRSS`` from ``/proc/<pid>/status`` summed over the process tree of each
  service (the API, the worker with its pool and sandbox children, ...) and the largest single process.

The suite tells the probe process which pids are the services' roots through a small JSON file that it
rewrites whenever a process is restarted. Records are JSON lines: ``{"k": "h", "t", "ms", "s"}`` for a probe
(``s`` 0: no answer), ``{"k": "r", "t", "rss": {service: kB}, "top": {service: kB}}`` for a sample.

    python -m tests.reliability.probes --url URL --roots FILE --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tests.reliability.harness import descendants
from tests.reliability.report import percentile


def vm_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _Writer:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        with self._lock:
            self._out.flush()


def _sample(roots_file: Path, writer: _Writer, stop: threading.Event) -> None:
    roots: dict[str, list[int]] = {}
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError):
            roots = json.loads(roots_file.read_text())
        rss: dict[str, int] = {}
        top: dict[str, int] = {}
        for service, pids in roots.items():
            tree = [p for root in pids for p in (root, *descendants(root))]
            sizes = [vm_rss_kb(p) for p in tree]
            rss[service] = sum(sizes)
            top[service] = max(sizes, default=0)
        writer.write({"k": "r", "t": time.time(), "rss": rss, "top": top})
        writer.flush()
        stop.wait(0.5)


async def _probe(url: str, writer: _Writer, stop: threading.Event) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=400)) as http:

        async def one() -> None:
            sent = time.time()
            started = time.perf_counter()
            try:
                status = (await http.get(f"{url}/health")).status_code
            except httpx.HTTPError:
                status = 0
            writer.write({"k": "h", "t": sent, "ms": (time.perf_counter() - started) * 1000, "s": status})

        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            if len(pending) < 300:
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(random.uniform(0.1, 0.2))
        if pending:
            await asyncio.wait(pending, timeout=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--roots", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(args.out, "a", encoding="utf-8") as out:
        writer = _Writer(out)
        sampler = threading.Thread(target=_sample, args=(args.roots, writer, stop), daemon=True)
        sampler.start()
        asyncio.run(_probe(args.url.rstrip("/"), writer, stop))
        sampler.join(timeout=5)
        writer.flush()


# -- the suite's side ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """What the probes saw between two wall-clock times."""

    probes: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    rss_kb: dict[str, int]  # largest tree sum per service
    top_kb: dict[str, int]  # largest single process per service


class Probes:
    """Starts and stops the probe process and reads what it wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.roots_file = folder / "roots.json"
        self.out = folder / "probes.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, url: str, roots: dict[str, list[int]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.update(roots)
        with open(self.folder / "probes.log", "ab") as log:  # the child keeps its own copy
            self._proc = self._spawn(url, log)

    def _spawn(self, url: str, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability.probes",
                "--url",
                url,
                "--roots",
                str(self.roots_file),
                "--out",
                str(self.out),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def update(self, roots: dict[str, list[int]]) -> None:
        tmp = self.roots_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(roots))
        os.replace(tmp, self.roots_file)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        rows = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
        return rows

    def window(self, start: float, end: float, records: list[dict[str, Any]] | None = None) -> Window:
        records = self.records() if records is None else records
        probes = [r for r in records if r["k"] == "h" and start <= r["t"] <= end]
        ms = [r["ms"] for r in probes]
        rss: dict[str, int] = {}
        top: dict[str, int] = {}
        for r in records:
            if r["k"] == "r" and start <= r["t"] <= end:
                for service, kb in r["rss"].items():
                    rss[service] = max(rss.get(service, 0), kb)
                for service, kb in r["top"].items():
                    top[service] = max(top.get(service, 0), kb)
        return Window(
            probes=len(probes),
            failed=sum(1 for r in probes if r["s"] != 200),
            p50_ms=percentile(ms, 50),
            p99_ms=percentile(ms, 99),
            max_ms=max(ms) if ms else None,
            rss_kb=rss,
            top_kb=top,
        )


if __name__ == "__main__":
    main()
