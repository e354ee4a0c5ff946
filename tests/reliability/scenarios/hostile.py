"""Scenario 6: hostile inputs, as tenant c.

In this order: bombs (a .docx zip bomb, 100,000 nested <div>s, billion laughs, ...), with one small upload
of tenant b right behind them (do other tenants' jobs keep flowing?); the generated hostile requests
(``hostile_inputs``); a schemathesis pass over the live OpenAPI document; bodies past
``API_MAX_REQUEST_BYTES`` (declared and chunked, over raw sockets) and 10^6-character queries; then the wait
for the bombs. Figures: 5xx other than the documented 503, calls without an answer within 10 s, each bomb
`failed` (or refused at the door) within 60 s, the other tenant's job, permanent errors accepted with 202,
files written outside the data folder, and the probes' figures over this phase.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.reliability import corpus, report
from tests.reliability.harness import Result, Tally, gather_limited
from tests.reliability.hostile_inputs import TRAVERSAL_TOKEN, Hostile, all_inputs
from tests.reliability.report import Row
from tests.reliability.scenarios.common import TERMINAL, Context, job_updates

logger = logging.getLogger(__name__)

HANG_S = 10.0
BOMB_GOAL_S = 60.0  # issue 12: a bomb ends `failed` within 60 s
MIB = 1024 * 1024


@dataclass
class Watched:
    label: str
    uploaded_at: float  # wall clock
    job_id: str | None = None
    refused: int = 0  # HTTP status when refused at the door
    ended_at: float | None = None
    state: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.uploaded_at


async def _watch(ctx: Context, watched: list[Watched], stop: asyncio.Event) -> None:
    while not stop.is_set():
        open_jobs = [w for w in watched if w.job_id and w.ended_at is None]
        seen = await job_updates(ctx, [w.job_id for w in open_jobs if w.job_id]) or {}
        for w in open_jobs:
            state, updated = seen.get(w.job_id or "", ("", 0.0))
            w.state = state or w.state
            if state in TERMINAL:
                w.ended_at = updated or time.time()
        await asyncio.sleep(0.5)


async def _upload_watched(ctx: Context, key: str, name: str, data: bytes, label: str) -> Watched:
    watched = Watched(label, time.time())
    result = await ctx.api.call(
        "POST", "/v1/documents", key=key, retry_429=True, timeout=60, files=[("files", (name, data))]
    )
    if result.status == 202:
        watched.job_id = result.json()["jobs"][0]["job_id"]
    else:
        watched.refused = result.status
        watched.ended_at = time.time()
        watched.state = f"refused {result.status}"
    return watched


def _brief(item: Hostile) -> str:
    """A short, printable description of what a hostile request carried (for the table)."""
    parts = []
    files = item.kwargs.get("files") or []
    if files:
        parts.append(f"file {files[0][1][0]!r:.50}" + (f" (+{len(files) - 1})" if len(files) > 1 else ""))
    for name, value in (item.kwargs.get("data") or {}).items():
        parts.append(f"{name}={value!r:.50}")
    if "content" in item.kwargs:
        parts.append(f"body {item.kwargs['content']!r:.50}")
    return ", ".join(parts)


# -- raw HTTP: bodies that httpx will not send (lying Content-Length, endless chunked) -----------------------
async def _raw(
    url: str,
    path: str,
    key: str,
    *,
    content_type: str,
    declared: int | None,
    body_bytes: int,
    chunk: bytes = b"x" * 65536,
    prefix: bytes = b"",
    timeout: float = 30.0,
) -> tuple[int, float, int, int]:
    """Send a request with ``Content-Length: declared`` (or chunked when None) and up to ``body_bytes`` of
    body, stopping as soon as the server answers; returns (status, seconds to the answer, bytes sent,
    bytes that can be in flight unread, ``_in_flight_bytes``)."""
    parts = urlsplit(url)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    in_flight = _in_flight_bytes(writer)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Authorization: Bearer {key}",
        f"Content-Type: {content_type}",
        "Connection: close",
    ]
    head.append("Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = asyncio.create_task(reader.readline())
    sent = 0
    try:
        pieces = [prefix] if prefix else []
        while sent < body_bytes and not answer.done():
            piece = pieces.pop(0) if pieces else chunk[: body_bytes - sent]
            writer.write(piece if declared is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            await asyncio.wait_for(writer.drain(), timeout=timeout)
        if declared is None and not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (TimeoutError, OSError):  # the server closed the connection (an early answer) or stopped reading
        pass
    await asyncio.wait({answer}, timeout=max(0.1, timeout - (time.perf_counter() - started)))
    status = 0
    if answer.done() and answer.exception() is None and answer.result().startswith(b"HTTP/"):
        status = int(answer.result().split()[1])
    elif not answer.done():
        answer.cancel()
    writer.close()
    return status, time.perf_counter() - started, sent, in_flight


def _in_flight_bytes(writer: asyncio.StreamWriter) -> int:
    """How many body bytes can be "sent" without the server having read them: the client socket's send
    buffer plus the most the kernel lets a receiving socket buffer (``tcp_rmem`` max), plus one read of
    the server's. A refusal at the cap still sees up to this much more leave the client."""
    sock = writer.get_extra_info("socket")
    send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) if sock is not None else 4 * MIB
    try:
        receive_max = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        receive_max = 32 * MIB
    return send_buffer + receive_max + MIB


async def _big_bodies(ctx: Context, cap: int, tally: Tally) -> tuple[int, list[str]]:
    """Bodies past the cap; returns (how many were sent, those not refused with 413 at the cap: the
    client may have pushed the kernel's socket buffers' worth more, see ``_in_flight_bytes``, and a body
    far past the cap must not have been read to its end)."""
    url, key = ctx.harness.api_url, ctx.key("c")
    late: list[str] = []
    cases: list[tuple[str, str, str, int | None, int, bytes]] = [
        ("declared length over the cap, search", "/v1/search", "application/json", cap + 1, 1024, b""),
        (
            "declared length over the cap, upload",
            "/v1/documents",
            "multipart/form-data; boundary=x",
            cap + 1,
            1024,
            b"",
        ),
        ("declared length 10^15", "/v1/embeddings", "application/json", 10**15, 1024, b""),
        ("chunked junk past the cap, search", "/v1/search", "application/json", None, cap + 64 * MIB, b""),
        (
            "chunked file past the cap, upload",
            "/v1/documents",
            "multipart/form-data; boundary=x",
            None,
            cap + 64 * MIB,
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n',
        ),
    ]
    for label, path, content_type, declared, size, prefix in cases:
        status, seconds, sent, in_flight = await _raw(
            url,
            path,
            key,
            content_type=content_type,
            declared=declared,
            body_bytes=size,
            prefix=prefix,
            timeout=60,
        )
        tally.add(label, Result(status, seconds, None, "" if status else "no answer"))
        logger.info(
            "%s: %s after %.1f s, %d MiB sent (cap %d MiB, up to %d MiB can be in flight unread)",
            label,
            status or "no answer",
            seconds,
            sent // MIB,
            cap // MIB,
            in_flight // MIB,
        )
        if status != 413 or sent > cap + in_flight or (declared is None and sent >= size):
            late.append(f"{label}: {status or 'no answer'} after {seconds:.1f} s, {sent // MIB} MiB sent")
    # A chunked JSON body whose query is 20 MiB (the repro: 503 after 51 s and +1.3 GB).
    query = b'{"query": "' + b"word " * (4 * MIB) + b'"}'
    status, seconds, _sent, _ = await _raw(
        url,
        "/v1/search",
        key,
        content_type="application/json",
        declared=None,
        body_bytes=len(query),
        prefix=query,
        timeout=60,
    )
    tally.add("chunked 20 MiB query", Result(status, seconds, None, "" if status else "no answer"))
    logger.info("chunked 20 MiB query: %s after %.1f s", status or "no answer", seconds)
    if status not in (413, 422):
        late.append(f"chunked 20 MiB query: {status or 'no answer'} after {seconds:.1f} s")
    return len(cases) + 1, late


async def _long_queries(ctx: Context, tally: Tally) -> tuple[int, list[str]]:
    """10^6-character queries (and instruction) in each mode: the issue expects 422 naming the field."""
    key, wrong = ctx.key("c"), []
    query = ("lorem ipsum river valley " * 40_000)[:1_000_000]
    bodies = [
        ("/v1/search", {"query": query, **({"mode": m} if m else {})})
        for m in (None, "dense", "bm25", "hybrid")
    ]
    bodies += [
        ("/v1/search", {"query": "river", "instruction": query}),
        ("/v1/rerank", {"query": query, "documents": ["a", "b"]}),
        ("/v1/embeddings", {"input": query}),
    ]
    for path, body in bodies:
        result = await ctx.api.call("POST", path, key=key, retry_429=True, timeout=60, json=body)
        tally.add(f"10^6-char {path} {body.get('mode', '')}", result)
        if path == "/v1/search" and result.status != 422:
            wrong.append(
                f"{path} {body.get('mode') or ('instruction' if 'instruction' in body else 'default')}: "
                f"{result.status or result.error} in {result.seconds:.1f} s"
            )
    return len(bodies), wrong


async def _same_upload_at_once(ctx: Context, tally: Tally, copies: int = 8) -> int:
    """The same file, id and metadata uploaded ``copies`` times at once (a client retrying in parallel)."""
    body = b"# twin\n\nThe same upload, sent several times at the same moment.\n"

    async def one() -> None:
        result = await ctx.api.call(
            "POST",
            "/v1/documents",
            key=ctx.key("c"),
            retry_429=True,
            timeout=30,
            files=[("files", ("twin.md", body))],
            data={"document_id": "twin", "metadata": '{"copy": true}'},
        )
        tally.add("same upload 8x at once, file 'twin.md'", result)

    await asyncio.gather(*(one() for _ in range(copies)))
    return copies


def _schemathesis(ctx: Context, examples: int) -> tuple[int, list[str], dict[int, int]]:
    """A positive and a negative schemathesis pass over every operation of the live OpenAPI document, with
    tenant c's key; returns (cases, 5xx other than 503, statuses)."""
    import hypothesis
    import requests
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{ctx.harness.api_url}/openapi.json")
    headers = {"Authorization": f"Bearer {ctx.key('c')}"}
    statuses: dict[int, int] = {}
    bad: list[str] = []
    for found in schema.get_all_operations():
        operation = found.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                try:
                    response = case.call(base_url=ctx.harness.api_url, headers=headers, timeout=30)
                    status = response.status_code
                except requests.RequestException as exc:  # no answer in 30 s, connection dropped
                    status = 0
                    bad.append(f"{case.operation.label}: no answer ({type(exc).__name__})")
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500 and status != 503:
                    bad.append(f"{case.operation.label}: {status}")

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                continue
            except Exception as exc:  # noqa: BLE001 - a generation problem of one operation: note it, go on
                logger.warning("schemathesis on %s (%s): %s", operation.label, mode.value, str(exc)[:300])
    return sum(statuses.values()), bad, statuses


def _escaped_files(home: Path) -> list[str]:
    """Files named with the traversal token anywhere but under the stack's data folder."""
    data = home / "files"
    found = []
    roots = [home.parent, Path("/tmp"), Path("/etc"), Path.cwd(), Path.home(), Path("/")]
    for root in roots:
        pattern = "**/*" if root == home.parent else "*"
        try:
            for path in root.glob(pattern):
                if TRAVERSAL_TOKEN in path.name and data not in path.parents:
                    found.append(str(path))
        except OSError:
            continue
    return sorted(set(found))


async def hostile(ctx: Context) -> Row:
    profile = ctx.profile
    row = Row("hostile", "hostile inputs")
    started = time.time()
    key_c = ctx.key("c")
    tally = Tally(hang_s=HANG_S)
    info = await ctx.api.call("GET", "/info", key=key_c)
    cap = (
        int(info.json().get("limits", {}).get("max_request_bytes", 200 * MIB))
        if info.status == 200
        else 200 * MIB
    )

    # 1. Bombs first, then one small job of another tenant right behind them.
    bombs = await asyncio.to_thread(corpus.bombs, profile.bomb_mib, full=profile.name == "full")
    watched = [await _upload_watched(ctx, key_c, b.name, b.data, b.what) for b in bombs]
    other = corpus.corpus("bo", 1, large_every=0)[0]
    behind = await _upload_watched(ctx, ctx.key("b"), other.name, other.data, "tenant b's small upload")
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(ctx, [*watched, behind], stop))

    # 2. The generated hostile requests.
    inputs = all_inputs(profile.hostile_inputs)
    accepted_bad: list[str] = []

    async def send(item: Hostile) -> None:
        kwargs = dict(item.kwargs)
        headers = {"Authorization": f"Bearer {key_c}", **kwargs.pop("headers", {})}
        result = await ctx.api.call(
            item.method, item.path, retry_429=True, timeout=30, headers=headers, **kwargs
        )
        tally.add(f"{item.label} {item.method} {item.path[:60]} {_brief(item)}", result)
        if item.must_refuse and result.status == 202:
            accepted_bad.append(item.label)

    await gather_limited(4, [send(i) for i in inputs])
    sent = len(inputs) - len(tally.not_sent)
    sent += await _same_upload_at_once(ctx, tally)

    # 3. Schemathesis over the live OpenAPI document.
    cases, schema_bad, schema_statuses = await asyncio.to_thread(
        _schemathesis, ctx, profile.schemathesis_examples
    )

    # 4. Bodies past the cap, 10^6-character queries.
    late: list[str] = []
    wrong_queries: list[str] = []
    if profile.big_bodies:
        count, late = await _big_bodies(ctx, cap, tally)
        sent += count
        count, wrong_queries = await _long_queries(ctx, tally)
        sent += count

    # 5. The bombs get their 60 s (from their upload) to end.
    deadline = min(w.uploaded_at for w in watched) + profile.bomb_wait_s + 5
    while time.time() < deadline and any(w.ended_at is None for w in [*watched, behind]):
        await asyncio.sleep(0.5)
    stop.set()
    await watcher
    escaped = await asyncio.to_thread(_escaped_files, ctx.harness.stack.home)
    window = ctx.probes.window(started, time.time())

    def bomb_ok(w: Watched, bomb: corpus.Bomb) -> bool:
        if w.refused:
            return 400 <= w.refused < 500
        allowed = ("failed", "done") if bomb.may_succeed else ("failed",)
        return w.seconds is not None and w.seconds <= BOMB_GOAL_S and w.state in allowed

    slow_bombs = [
        f"{w.label}: {w.state or 'queued'}"
        + (f" after {w.seconds:.0f} s" if w.seconds else f" (waited {profile.bomb_wait_s:.0f} s)")
        for w, b in zip(watched, bombs, strict=True)
        if not bomb_ok(w, b)
    ]
    bomb_seconds = [w.seconds if w.seconds is not None else time.time() - w.uploaded_at for w in watched]
    bad_5xx = tally.bad_5xx + schema_bad
    row.done = (
        f"as tenant c: {len(bombs)} bombs ({'; '.join(b.what for b in bombs)}), then {len(inputs)} generated "
        "hostile requests, 4 at a time (traversal names and ids, NaN/Infinity/1e400/deep metadata, junk "
        "files, malformed JSON on every JSON route, odd headers and methods, mutated bodies), one upload "
        "sent 8 times at once"
        + (
            ", bodies past the cap (declared and chunked, raw sockets), a chunked 20 MiB query and 10^6-char "
            "queries in each mode"
            if profile.big_bodies
            else ""
        )
        + f"; a schemathesis pass (positive and negative, {profile.schemathesis_examples} examples per "
        "operation)"
    )
    row.counts = [
        f"{sent + len(bombs)} hostile inputs + {cases} schemathesis cases; request cap {cap // MIB} MiB",
        f"HTTP: {tally.summary()}",
        "schemathesis: " + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(schema_statuses.items())),
        "bombs: "
        + "; ".join(
            f"{w.label} {w.state or 'queued'}"
            + (f" in {w.seconds:.0f} s" if w.seconds is not None and not w.refused else "")
            for w in watched
        ),
    ]
    row.figures = [
        report.zero("5xx (not 503)", len(bad_5xx)),
        report.zero("dropped without an answer", len(tally.no_answer)),
        report.zero("hangs (> 10 s)", len(tally.hangs), correctness=False),
        report.Figure(
            "bombs failed within 60 s",
            f"{len(watched) - len(slow_bombs)} of {len(watched)} (max {max(bomb_seconds):.0f} s)",
            "all",
            not slow_bombs,
        ),
        report.at_most(
            "tenant b's job behind the bombs done in",
            behind.seconds if behind.state == "done" else None,
            60,
            " s",
            0,
        ),
        report.zero("permanent errors accepted (202)", len(accepted_bad), correctness=False),
        report.zero("files written outside the data folder", len(escaped)),
        report.at_most(
            "API RSS max (this phase)", (window.rss_kb.get("api") or 0) / 1024 or None, 1536, " MiB", 0
        ),
        report.info("worker RSS max (this phase)", f"{(window.rss_kb.get('worker') or 0) / 1024:.0f} MiB"),
        report.at_most("/health p99 (this phase)", window.p99_ms, 100, " ms", 1),
    ]
    if profile.big_bodies:
        row.figures.insert(
            5, report.zero("oversize bodies not refused with 413 by the cap", len(late), correctness=False)
        )
        row.figures.insert(
            6, report.zero("10^6-char queries not answered 422", len(wrong_queries), correctness=False)
        )
    for title, items in (
        ("5xx", bad_5xx),
        ("hangs", tally.hangs),
        ("no answer", tally.no_answer),
        ("bombs", slow_bombs),
        ("oversize", late),
        ("long queries", wrong_queries),
        ("202 for", accepted_bad),
        ("not sent (httpx refused to build them)", tally.not_sent),
        ("escaped", escaped),
    ):
        if items:
            row.counts.append(
                f"{title}: " + "; ".join(items[:4]) + (f" (+{len(items) - 4})" if len(items) > 4 else "")
            )
    row.counts.append(
        f"tenant b's job: {behind.state or 'queued'}"
        + (f" in {behind.seconds:.0f} s" if behind.seconds else "")
    )
    return row
