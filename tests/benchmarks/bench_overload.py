"""Benchmark: /v1/search under overload — saturation, then 1x and 2x of it offered, then recovery.

    .venv/bin/python tests/benchmarks/bench_overload.py [--phase-s 5] [--embedder minilm|hash]
        [--env API_SEARCH_CONCURRENCY=4 ...] [--app-path /path/to/another/checkout]

A script, not a test. It starts the API as a subprocess (this file with ``--serve``: uvicorn on a free port,
an in-memory store, fakeredis, the MiniLM embedder, or the hashed test embedder with ``--embedder hash``,
no reranker, no result cache, no rate limit: admission control alone sheds the load), ingests the sample
documents (api/sample) in that process, then drives ``POST /v1/search`` from this one (asyncio, keep-alive
connections, a minimal HTTP/1.1 client so that the load costs little CPU next to the server):

1. saturation: closed loop, as many clients as the search queue holds (``API_SEARCH_CONCURRENCY`` running
   plus ``API_SEARCH_QUEUE`` waiting: busy, never refused), for ``--phase-s``: the answers per second are the
   peak;
2. 1x: open loop, requests sent at the peak rate whatever the answers (so a backlog shows);
3. 2x: open loop at twice the peak;
4. recovery: straight after 2x (the answers still owed to 2x outstanding), open loop at half the peak: the
   seconds from the drop until every later request is answered 200 within the 1x p99.

Goodput is the searches answered 200 within a phase's window, per second: a backlog served later does not
count.

``GET /health`` is probed 10 times a second throughout. Latency is taken at the client, from sending a request
to having its answer. Prints a Markdown table; writes it to $OUT/bench_overload.md when OUT is set.
``--app-path`` serves another checkout (e.g. the main branch, to compare); ``--env NAME=VALUE`` passes
settings to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "api" / "sample"
KEY = "bench-overload-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERIES = [
    "how do plants turn sunlight into sugar",
    "why do earthquakes happen at plate boundaries",
    "who invented the printing press with movable type",
    "how does public key encryption work",
    "what does the rust borrow checker prevent",
    "why does sourdough rise without commercial yeast",
    "how do vaccines train the immune system",
    "what drives the water cycle",
    "what does the Cache-Control header do",
    "how long does bread dough ferment",
    "what are memory B cells",
    "what is a digital signature",
]


# -- the server (a subprocess) -------------------------------------------------------------------------------
def serve(port: int, embedder: str) -> None:
    import fakeredis
    import uvicorn

    from api.app import create_app
    from api.resources import Resources, Settings, build_resources
    from api.settings import ApiSettings
    from ingestion import pipeline
    from ingestion.settings import IngestSettings
    from retrieval.memory_store import InMemoryStore
    from tests.support.fakes import HashEmbedder, RecordingSender

    home = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    settings = Settings(
        api=ApiSettings(keys={KEY: "bench"}, rate_limit_per_s=0, cache_ttl_s=0, rerank_gate="off"),
        ingest=IngestSettings(data_dir=home / "files"),
    )

    def factory(s: Settings) -> Resources:
        res = build_resources(
            s,
            embedder=HashEmbedder() if embedder == "hash" else None,
            store=InMemoryStore(),
            sender=RecordingSender(),
            redis_client=fakeredis.FakeRedis(decode_responses=True),
        )
        for path in sorted(SAMPLE.iterdir()):
            if path.is_file():
                res.uploads.accept("bench", path.name, path.read_bytes(), document_id=None, metadata={})
        sender: RecordingSender = res.uploads.sender  # type: ignore[assignment] # built with one above
        for _, (job_id,) in sender.sent:
            job = res.records.get_job(job_id)
            models = res.models.current()
            pipeline.ingest(
                job.document_version,
                records=res.records,
                store=models.store,
                embedder=models.embedder,
                settings=s.ingest,
            )
        sender.sent.clear()
        return res

    uvicorn.run(
        create_app(settings, resources_factory=factory), host="127.0.0.1", port=port, log_level="error"
    )


# -- the load ------------------------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    offered: float | None  # requests/s; None: closed loop
    results: list[tuple[float, float, int]] = field(default_factory=list)  # (sent at, ms, status)
    health_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0

    def of(self, status: int) -> list[float]:
        return [ms for _, ms, s in self.results if s == status]

    def goodput(self) -> float:
        """Searches answered 200 within the phase's window, per second."""
        end = self.started + self.seconds
        done = [sent + ms / 1000 for sent, ms, status in self.results if status == 200]
        return sum(1 for t in done if t <= end) / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Client:
    """A small HTTP/1.1 client on keep-alive connections: the load generator shares the box with the server,
    so it must cost far less CPU per request than the answers it measures (a 429 costs the server little)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        """The status of the answer (0: the connection failed)."""
        conn = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = conn
        head = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await reader.readline()
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            await reader.readexactly(length)
            status = int(status_line.split()[1])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()
            return 0
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


SEARCH_HEADERS = {**AUTH, "Content-Type": "application/json"}


async def one(client: Client, phase: Phase, query: str) -> None:
    body = json.dumps({"query": query, "top_k": 5}).encode()
    sent = time.perf_counter()
    status = await client.request("POST", "/v1/search", body, SEARCH_HEADERS)
    phase.results.append((sent, (time.perf_counter() - sent) * 1000, status))


async def closed_loop(client: Client, phase: Phase, clients: int, seconds: float) -> None:
    end = time.perf_counter() + seconds
    phase.started = time.perf_counter()

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < end:
            await one(client, phase, QUERIES[i % len(QUERIES)])
            i += clients

    await asyncio.gather(*(worker(w) for w in range(clients)))
    phase.seconds = time.perf_counter() - phase.started


async def open_loop(client: Client, phase: Phase, rate: float, seconds: float) -> list[asyncio.Task[None]]:
    """Send at ``rate`` for ``seconds`` whatever the answers; returns when the last one is sent (the answers
    still outstanding are the returned tasks: the next phase starts at once, as a load drop would)."""
    phase.started = start = time.perf_counter()
    phase.seconds = seconds
    count = max(1, int(rate * seconds))
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(client, phase, QUERIES[i % len(QUERIES)])))
    await asyncio.sleep(max(0.0, start + seconds - time.perf_counter()))
    return tasks


async def probe_health(client: Client, phases: list[Phase], stop: asyncio.Event) -> None:
    while not stop.is_set():
        sent = time.perf_counter()
        await client.request("GET", "/health")
        phases[-1].health_ms.append((time.perf_counter() - sent) * 1000)
        await asyncio.sleep(0.1)


async def drive(port: int, clients: int, seconds: float) -> list[Phase]:
    client, prober = Client(port), Client(port)
    try:
        warm = Phase("warm-up", None)
        await closed_loop(client, warm, clients, min(3.0, seconds))
        phases = [Phase("saturation (closed loop)", None)]
        stop = asyncio.Event()
        health = asyncio.create_task(probe_health(prober, phases, stop))
        await closed_loop(client, phases[0], clients, seconds)
        peak = phases[0].goodput()
        outstanding: list[asyncio.Task[None]] = []
        for name, factor in (("1x", 1.0), ("2x", 2.0), ("recovery at 0.5x", 0.5)):
            phases.append(Phase(name, peak * factor))
            outstanding += await open_loop(client, phases[-1], peak * factor, seconds)
        await asyncio.gather(*outstanding)
        stop.set()
        await health
    finally:
        client.close()
        prober.close()
    return phases


def recovery_s(recovery: Phase, bound_ms: float) -> float:
    """Seconds from the start of the phase until every later request is answered 200 within ``bound_ms``."""
    ordered = sorted(recovery.results)
    last_bad = None
    for sent, ms, status in ordered:
        if status != 200 or ms > bound_ms:
            last_bad = sent + ms / 1000
    return 0.0 if last_bad is None else max(0.0, last_bad - recovery.started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def row(phase: Phase, peak: float) -> str:
    ok, refused = phase.of(200), phase.of(429)
    other = len(phase.results) - len(ok) - len(refused)
    offered = f"{phase.offered:.1f}" if phase.offered is not None else "closed"
    return (
        f"| {phase.name} | {offered} | {len(phase.results)} | {len(ok)} | {len(refused)} | {other} | "
        f"{phase.goodput():.1f} ({phase.goodput() / peak:.0%}) | {percentile(ok, 50):.0f} | "
        f"{percentile(ok, 99):.0f} | {percentile(refused, 50):.1f} | {percentile(refused, 99):.1f} | "
        f"{percentile(phase.health_ms, 99):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    parser.add_argument("--phase-s", type=float, default=5.0, help="seconds of each phase")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--app-path", type=Path, default=ROOT, help="the checkout the server runs")
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.embedder)
        return

    sys.path.insert(0, str(ROOT))
    from api.settings import ApiSettings

    env = {**os.environ, "PYTHONPATH": str(args.app_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update(dict(item.split("=", 1) for item in args.env))
    defaults = ApiSettings()
    clients = int(env.get("API_SEARCH_CONCURRENCY") or defaults.search_concurrency) + int(
        env.get("API_SEARCH_QUEUE") or defaults.search_queue
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, __file__, "--serve", "--port", str(port), "--embedder", args.embedder]
    proc = subprocess.Popen(argv, env=env, cwd=args.app_path)
    try:
        wait_ready(url, proc)
        phases = asyncio.run(drive(port, clients, args.phase_s))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    saturation, one_x, two_x, recovery = phases
    peak = saturation.goodput()
    bound = percentile(one_x.of(200), 99)
    settings = ", ".join(args.env) or "defaults"
    lines = [
        f"/v1/search overload: {args.phase_s:g} s per phase, embedder {args.embedder}, in-memory store, no "
        f"reranker, cache and rate limit off; server settings: {settings}; app {args.app_path}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Milliseconds at the client; saturation ran {clients} clients "
        "in a closed loop.",
        "",
        "| phase | offered/s | sent | 200 | 429 | other | goodput/s (of peak) | admitted p50 | "
        "admitted p99 | 429 p50 | 429 p99 | /health p99 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(row(p, peak) for p in phases),
        "",
        f"Peak {peak:.1f}/s. At 2x: goodput {two_x.goodput() / peak:.0%} of peak (goal >= 90%), admitted p99 "
        f"{percentile(two_x.of(200), 99) / bound:.2f}x the 1x p99 (goal <= 2), 429 p99 "
        f"{percentile(two_x.of(429), 99):.1f} ms (goal <= 50). Recovery: "
        f"{recovery_s(recovery, bound):.2f} s until every request was answered 200 within the 1x p99 "
        f"({bound:.0f} ms; goal <= 5 s).",
    ]
    table = "\n".join(lines)
    print(table)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_overload.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
