"""Closed-loop HTTP load for the service benchmarks: N clients, each sending its next request as soon as the
last one is answered, for a fixed time, on keep-alive connections.

``Client`` is a small HTTP/1.1 client on asyncio streams (plain http only): the load generator shares the
box with the server, so it must cost far less CPU per request than the answers it measures. ``closed_loop``
drives it and returns a ``Run``: every request's send time, latency at the client, status and, for a JSON
answer of /v1/search, its ``timings_ms`` and ``degraded`` flag.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Answer:
    sent: float  # perf_counter seconds
    ms: float
    status: int  # 0: the connection failed
    timings: dict[str, float] | None = None
    degraded: bool = False


@dataclass
class Run:
    clients: int
    seconds: float = 0.0
    started: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    def ok(self) -> list[Answer]:
        """Answered 200 within the run's window (a late answer is not goodput)."""
        end = self.started + self.seconds
        return [a for a in self.answers if a.status == 200 and a.sent + a.ms / 1000 <= end]

    def count(self, status: int) -> int:
        return sum(1 for a in self.answers if a.status == status)

    def throughput(self) -> float:
        """Answers 200 per second within the window (degraded ones included)."""
        return len(self.ok()) / self.seconds if self.seconds else 0.0

    def goodput(self, slo_ms: float | None = None) -> float:
        """Answers 200, not degraded (and within ``slo_ms`` when given), per second within the window."""
        good = [a for a in self.ok() if not a.degraded and (slo_ms is None or a.ms <= slo_ms)]
        return len(good) / self.seconds if self.seconds else 0.0

    def latencies(self) -> list[float]:
        return [a.ms for a in self.ok()]

    def stage_means(self) -> dict[str, float]:
        """Mean milliseconds per stage over the 200 answers (``timings_ms``; ``total`` is the server's)."""
        sums: dict[str, float] = {}
        timed = [a.timings for a in self.ok() if a.timings]
        for timings in timed:
            for name, ms in timings.items():
                sums[name] = sums.get(name, 0.0) + ms
        return {name: total / len(timed) for name, total in sums.items()} if timed else {}


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def knee_of(runs: Sequence[Run], share: float = 0.9) -> int:
    """The fewest clients whose goodput reaches ``share`` of the best goodput of ``runs``."""
    peak = max(run.goodput() for run in runs)
    return min(run.clients for run in runs if run.goodput() >= share * peak)


class Client:
    """HTTP/1.1 on keep-alive connections to one ``http://host:port`` (a path prefix in the URL is kept)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load client speaks plain http://host:port only, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = headers or {}
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes, float]:
        """The status, body and ``Retry-After`` seconds (0 when absent) of the answer (status 0: the
        connection failed). A kept-alive connection the server closed meanwhile (its keep-alive timeout, while
        a refused client waited) is replaced by a new one once, as HTTP clients do."""
        reused = bool(self.idle)
        status, payload, retry_after = await self._request(method, path, body)
        if status == 0 and reused:
            self.idle.clear()  # as old as the one that failed
            status, payload, retry_after = await self._request(method, path, body, fresh=True)
        return status, payload, retry_after

    async def _request(
        self, method: str, path: str, body: bytes, *, fresh: bool = False
    ) -> tuple[int, bytes, float]:
        if self.idle and not fresh:
            conn = self.idle.pop()
        else:
            try:
                conn = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return 0, b"", 0.0
        reader, writer = conn
        head = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            status_line = await reader.readline()
            length, close, retry_after = 0, False, 0.0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
                elif name.lower() == "retry-after":
                    retry_after = float(value)
            payload = await reader.readexactly(length)
            status = int(status_line.split()[1])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()
            return 0, b"", 0.0
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, payload, retry_after

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def search_once(client: Client, run: Run, body: bytes, path: str = "/v1/search") -> float:
    """One search (or another POST to ``path``), recorded in ``run``; returns the ``Retry-After`` seconds of a
    refusal (0 otherwise)."""
    sent = time.perf_counter()
    status, payload, retry_after = await client.request("POST", path, body)
    answer = Answer(sent, (time.perf_counter() - sent) * 1000, status)
    if status == 200:
        data = json.loads(payload)
        answer.timings, answer.degraded = data.get("timings_ms"), bool(data.get("degraded"))
    run.answers.append(answer)
    return retry_after


async def closed_loop(
    client: Client, bodies: Sequence[bytes], clients: int, seconds: float, path: str = "/v1/search"
) -> Run:
    """``clients`` closed-loop clients POSTing ``bodies`` in turn to ``path`` for ``seconds``. A client told
    to retry later (429 or 503 with ``Retry-After``) waits that long, or until the run ends, as a polite
    client does."""
    run = Run(clients)
    end = time.perf_counter() + seconds
    run.started = time.perf_counter()

    async def one_client(c: int) -> None:
        i = c
        while time.perf_counter() < end:
            wait = await search_once(client, run, bodies[i % len(bodies)], path)
            if wait > 0:
                await asyncio.sleep(max(0.0, min(wait, end - time.perf_counter())))
            i += clients

    await asyncio.gather(*(one_client(c) for c in range(clients)))
    run.seconds = time.perf_counter() - run.started
    return run
