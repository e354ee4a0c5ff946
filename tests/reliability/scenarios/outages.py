"""Scenarios 3 and 4: Redis, then Milvus Lite, SIGKILLed mid-ingest and mid-query and started again a few
seconds later on the same port over the same data (Redis with its append-only file).

Mid-ingest: uploads keep coming as a client would send them (a 503 or no answer is tried again each
second); the service is killed while a job is ``running``. Every upload that was accepted must end
searchable with its chunks. Mid-query: four clients search in a closed loop; the service is killed and
restarted under them. Figures: accepted-then-lost, 5xx other than the documented 503, calls left without
an answer for more than 10 s, and how long after the service answered again the API served again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.reliability import report
from tests.reliability.corpus import Doc, corpus
from tests.reliability.harness import Tally
from tests.reliability.report import Row
from tests.reliability.scenarios.common import (
    TERMINAL,
    Context,
    restore,
    running_job,
    upload,
    verify,
    wait_terminal,
)

logger = logging.getLogger(__name__)


@dataclass
class Outage:
    killed_at: float = 0.0  # monotonic
    restarted_at: float = 0.0
    answering_at: float = 0.0  # the service itself answers again
    replaced_by: str = ""


@dataclass
class Recovery:
    ready_after_s: float | None = None  # /ready 200 again, after the service answered
    served_after_s: float | None = None  # first 200 of the calls under test, after the service answered
    errors: dict[int, int] = field(default_factory=dict)


async def _break(ctx: Context, service: str, answers: Callable[[], bool]) -> Outage:
    outage = Outage()
    spec, record = await asyncio.to_thread(ctx.harness.kill, service)
    outage.killed_at = time.monotonic()
    await asyncio.sleep(ctx.profile.outage_s)
    await restore(ctx, service, spec, record)
    outage.restarted_at = time.monotonic()
    outage.replaced_by = record.replaced_by
    deadline, starts = time.monotonic() + 120, 1
    while not await asyncio.to_thread(answers):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{service} did not answer within 120 s of its restart{_last_words(ctx, service)}"
            )
        if ctx.harness.proc(service) is None and starts < 3:  # it exited (a port not yet free...): as a
            logger.warning("%s exited after its restart%s", service, _last_words(ctx, service))
            await restore(ctx, service, spec, record)  # supervisor would, start it again
            starts += 1
        await asyncio.sleep(0.1)
    outage.answering_at = time.monotonic()
    return outage


def _last_words(ctx: Context, service: str) -> str:
    """The end of the restarted process's log, for the error."""
    log = ctx.harness.home / "logs" / f"{service}.restarts.log"
    try:
        tail = log.read_bytes()[-600:].decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f" (its log ends: {tail!r})" if tail else ""


async def _ready_after(ctx: Context, since: float, timeout_s: float = 120.0) -> float | None:
    while time.monotonic() - since < timeout_s:
        result = await ctx.api.call("GET", "/ready", timeout=5)
        if result.status == 200:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def _mid_ingest(
    ctx: Context, service: str, tag: str, answers: Callable[[], bool]
) -> tuple[dict[str, tuple[Doc, str]], Tally, list[Outage], list[float | None]]:
    docs = corpus(tag, ctx.profile.outage_docs)
    tally = Tally()
    jobs: dict[str, str] = {}
    started = time.time()

    async def uploads() -> None:  # a steady stream (4 a second), so that it runs across the outage
        for doc in docs:
            job_id = await upload(ctx, ctx.key("a"), doc, tally=tally, until=time.monotonic() + 120)
            if job_id:
                jobs[doc.document_id] = job_id
            await asyncio.sleep(0.25)

    sender = asyncio.create_task(uploads())
    while len(jobs) < max(2, len(docs) // 3) and not sender.done():
        await asyncio.sleep(0.1)
    outages: list[Outage] = []
    readies: list[float | None] = []
    since = started
    for _ in range(ctx.profile.outage_kills):  # each while a job runs that started after the last restart
        if await running_job(ctx, list(jobs.values()), since=since, timeout_s=60) is None:
            break
        outages.append(await _break(ctx, service, answers))
        readies.append(await _ready_after(ctx, outages[-1].answering_at))
        since = time.time()
    await sender
    await wait_terminal(ctx, list(jobs.values()), ctx.profile.settle_s)
    by_id = {d.document_id: d for d in docs}
    accepted = {d: (by_id[d], j) for d, j in jobs.items()}
    ctx.docs_a.update({d: by_id[d] for d in jobs})
    ctx.jobs_a.update(jobs)
    return accepted, tally, outages, readies


async def _mid_query(
    ctx: Context, service: str, answers: Callable[[], bool]
) -> tuple[Tally, Outage, Recovery]:
    tally = Tally()
    recovery = Recovery()
    markers = [d.marker for d in list(ctx.docs_a.values())[:200]] or ["river valley"]
    stop = asyncio.Event()
    outage: Outage | None = None
    first_ok: list[float] = []

    async def client(n: int) -> None:
        i = n
        while not stop.is_set():
            word = ctx.rng.choice(["harbour", "glacier", "copper", "meadow"])
            query = f"{markers[i % len(markers)]} {word} {i}"
            sent = time.monotonic()
            result = await ctx.api.call(
                "POST", "/v1/search", key=ctx.key("a"), retry_429=True, max_wait_s=5, json={"query": query}
            )
            tally.add("search", result)
            if result.status != 200:
                recovery.errors[result.status] = recovery.errors.get(result.status, 0) + 1
            elif outage is not None and outage.answering_at and sent >= outage.answering_at:
                first_ok.append(time.monotonic())
            i += 4
            if result.status != 200:
                await asyncio.sleep(0.05)

    clients = [asyncio.create_task(client(n)) for n in range(4)]
    await asyncio.sleep(ctx.profile.query_phase_s)
    outage = await _break(ctx, service, answers)
    ready = _ready_after(ctx, outage.answering_at)
    recovery.ready_after_s = await ready
    deadline = time.monotonic() + 60
    while len(first_ok) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*clients)
    if first_ok:
        recovery.served_after_s = min(first_ok) - outage.answering_at
    return tally, outage, recovery


async def _outage(ctx: Context, service: str, label: str, tag: str, answers: Callable[[], bool]) -> Row:
    row = Row(service, f"{label} killed mid-ingest and mid-query")
    accepted, ingest_tally, ingest_outages, ingest_ready = await _mid_ingest(ctx, service, tag, answers)
    verdict = await verify(ctx, "a", accepted)
    query_tally, query_outage, recovery = await _mid_query(ctx, service, answers)
    states = await wait_terminal(ctx, [j for _, j in accepted.values()], 1)
    stuck = sum(1 for s in states.values() if s not in TERMINAL)
    bad = ingest_tally.bad_5xx + query_tally.bad_5xx
    hangs = ingest_tally.hangs + query_tally.hangs
    row.done = (
        f"SIGKILL of {label} while a job was running (up to {ctx.profile.outage_kills} times), amid a "
        f"stream of {ctx.profile.outage_docs} uploads (503 or no answer: sent again each second), each time "
        f"restarted {ctx.profile.outage_s:g} s later on the same port and data; then once under 4 "
        "closed-loop search clients"
    )
    answering = [o.answering_at - o.restarted_at for o in [*ingest_outages, query_outage]]
    ready = [r for r in ingest_ready if r is not None]
    row.counts = [
        f"mid-ingest: {len(accepted)} of {ctx.profile.outage_docs} uploads accepted; "
        f"HTTP: {ingest_tally.summary()}",
        f"mid-query: {query_tally.total} searches; HTTP: {query_tally.summary()}",
        f"{len(ingest_outages)} kill(s) mid-ingest (the next waits up to 60 s for a job to run) + 1 "
        f"mid-query, restarted by {query_outage.replaced_by}; "
        f"answering again {', '.join(f'{s:.1f}' for s in answering)} s after the restarts",
    ]
    row.figures = [
        report.zero("accepted-then-lost", verdict.lost_count),
        report.zero("jobs stuck not terminal", stuck),
        report.zero("duplicate chunk ids", verdict.duplicate_ids + verdict.duplicate_positions),
        report.zero("orphan chunks", verdict.orphans, correctness=False),
        report.zero("5xx (not 503)", len(bad)),
        report.zero("calls without an answer for > 10 s", len(hangs), correctness=False),
        report.info(
            "recovery after the service answered again",
            f"/ready {report.fmt(max(ready) if ready else None, ' s')} (ingest, the slowest), "
            f"{report.fmt(recovery.ready_after_s, ' s')} (query); "
            f"first search 200 {report.fmt(recovery.served_after_s, ' s')}",
        ),
    ]
    if verdict.lost:
        row.counts.append(f"lost: {verdict.breakdown()}")
    if bad:
        row.counts.append("5xx: " + "; ".join(bad[:3]))
    if hangs:
        row.counts.append("no answer > 10 s: " + "; ".join(hangs[:3]))
    return row


async def redis_outage(ctx: Context) -> Row:
    return await _outage(ctx, "redis", "Redis", "ar", ctx.harness.redis_answers)


async def milvus_outage(ctx: Context) -> Row:
    return await _outage(ctx, "milvus-lite", "Milvus Lite", "am", ctx.harness.milvus_answers)
