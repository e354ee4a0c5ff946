"""Scenarios 1 and 2: ingest under ``kill -9`` of the worker mid-task, then replay every upload 3 times."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from tests.reliability import report
from tests.reliability.corpus import Doc, corpus
from tests.reliability.harness import ProcSpec, Tally, gather_limited
from tests.reliability.report import Row
from tests.reliability.scenarios.common import (
    TERMINAL,
    Context,
    job_states,
    restore,
    running_job,
    upload,
    verify,
    wait_terminal,
)

logger = logging.getLogger(__name__)


async def _kill_loop(
    ctx: Context, jobs: dict[str, str], stop: asyncio.Event, kills: list[dict[str, object]]
) -> None:
    """Once the worker is taking jobs, let it work 5-15 s, wait until a job is ``running``, then SIGKILL the
    worker and its pool children and have it replaced (by the stack's supervisor if there is one, else by the
    suite). The interval counts from the moment the replacement ran its first job, not from its start, so
    that a slow model load cannot turn the run into nothing but restarts. A job is killed at most once: a long
    job killed every time it is redelivered would never end."""
    low, high = ctx.profile.kill_every_s
    last_spec: list[ProcSpec] = []

    async def watchdog() -> None:
        """A replacement that exits on its own (not killed by the suite) would leave no worker and stall the
        run: start it again (counted in the row)."""
        while not stop.is_set():
            if last_spec:
                ctx.harness.revive("worker", last_spec[-1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    guard = asyncio.create_task(watchdog())
    try:
        await _kills(ctx, jobs, stop, kills, last_spec, low, high)
    finally:
        stop.set()
        await guard


async def _kills(
    ctx: Context,
    jobs: dict[str, str],
    stop: asyncio.Event,
    kills: list[dict[str, object]],
    last_spec: list[ProcSpec],
    low: float,
    high: float,
) -> None:
    since = 0.0
    killed: set[str] = set()
    while not stop.is_set():
        if await running_job(ctx, list(jobs.values()), since=since, stop=stop) is None and not jobs:
            await asyncio.sleep(0.2)  # nothing uploaded yet
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=ctx.rng.uniform(low, high))
        if stop.is_set():
            return
        candidates = [j for j in jobs.values() if j not in killed]
        running = await running_job(ctx, candidates, since=since, stop=stop)
        if running is None:
            continue
        spec, record = await asyncio.to_thread(ctx.harness.kill, "worker")
        await restore(ctx, "worker", spec, record)
        last_spec.append(spec)
        since = time.time()
        killed.add(running)
        kills.append({"job": running, "by": record.replaced_by})
        logger.info("kill %d: worker killed while job %s was running", len(kills), running)


async def ingest_under_kills(ctx: Context) -> Row:
    profile = ctx.profile
    docs = corpus("a", profile.docs)
    row = Row("ingest", "ingest under kill -9 of the worker")
    tally = Tally()
    jobs: dict[str, str] = {}
    kills: list[dict[str, object]] = []
    stop = asyncio.Event()
    killer = asyncio.create_task(_kill_loop(ctx, jobs, stop, kills))
    started = time.monotonic()

    async def one(doc: Doc) -> None:
        job_id = await upload(ctx, ctx.key("a"), doc, tally=tally)
        if job_id:
            jobs[doc.document_id] = job_id

    try:
        await gather_limited(4, [one(d) for d in docs])
        uploaded_s = time.monotonic() - started
        # Keep killing until every accepted job has ended (or the run's bound is reached).
        deadline = started + profile.ingest_timeout_s
        while time.monotonic() < deadline:
            states = await job_states(ctx, list(jobs.values())) or {}
            if states and all(s in TERMINAL for s in states.values()):
                break
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await killer
    states = await wait_terminal(ctx, list(jobs.values()), profile.settle_s)
    ingest_s = time.monotonic() - started
    by_id = {d.document_id: d for d in docs}
    accepted = {d: (by_id[d], j) for d, j in jobs.items()}
    verdict = await verify(ctx, "a", accepted)
    ctx.docs_a.update({d: by_id[d] for d in jobs})
    ctx.jobs_a.update(jobs)

    redelivered = sum(n for attempts, n in verdict.attempts.items() if attempts >= 2)
    by_suite = sum(1 for k in kills if k["by"] == "suite")
    row.done = (
        f"uploaded {len(docs)} documents of tenant a (md/txt/html/docx, every 10th of 40-80 paragraphs), 4 "
        f"clients, while the worker (main process and pool children) was SIGKILLed every "
        f"{profile.kill_every_s[0]:g}-{profile.kill_every_s[1]:g} s at a moment a job was `running`; "
        "replaced "
        f"by {'the suite' if by_suite == len(kills) else 'the stack supervisor or the suite'}"
    )
    row.counts = [
        f"{len(docs)} uploads, {len(jobs)} accepted (202), {len(docs) - len(jobs)} refused",
        f"{len(kills)} kills, each with a job running; {redelivered} jobs took more than one attempt"
        + (
            f"; {len(ctx.harness.revived)} replacement(s) exited on their own and were started again "
            f"(codes {', '.join(str(code) for _, code in ctx.harness.revived)})"
            if ctx.harness.revived
            else ""
        ),
        f"{verdict.chunks} chunks in Milvus; uploads took {uploaded_s:.0f} s, "
        f"all jobs ended after {ingest_s:.0f} s",
        f"HTTP: {tally.summary()}",
    ]
    row.figures = [
        report.zero("accepted-then-lost", verdict.lost_count),
        report.zero("duplicate chunk ids", verdict.duplicate_ids + verdict.duplicate_positions),
        report.zero("jobs stuck not terminal", sum(1 for s in states.values() if s not in TERMINAL)),
        report.zero("uploads refused or 5xx", len(docs) - len(jobs) + len(tally.bad_5xx)),
    ]
    if profile.name == "full":
        row.figures.append(report.at_least("documents", len(docs), 1000, digits=0))
    if verdict.lost:
        row.counts.append(f"lost: {verdict.breakdown()}")
    return row


async def replay(ctx: Context) -> Row:
    """Upload tenant a's documents again, identical bytes, id and metadata, three times: nothing changes."""
    row = Row("replay", f"replay every upload x{ctx.profile.replays}")
    docs = list(ctx.docs_a.values())
    key = ctx.key("a")
    if not docs:
        row.error = "no documents from the ingest scenario"
        return row

    async def snapshot() -> tuple[dict[str, tuple[str, int]], set[str]]:
        listing = await ctx.api.call("GET", "/v1/documents", key=key, retry_429=True)
        documents = {d["document_id"]: (d["version"], d["chunks"]) for d in listing.json()}
        rows = await asyncio.to_thread(ctx.harness.chunk_rows, ctx.tenant("a"))
        return documents, {r["id"] for r in rows}

    before_docs, before_ids = await snapshot()
    tally = Tally()
    replay_jobs: list[str] = []

    async def again(doc: Doc) -> None:
        job_id = await upload(ctx, key, doc, tally=tally)
        if job_id:
            replay_jobs.append(job_id)

    for _ in range(ctx.profile.replays):
        await gather_limited(4, [again(d) for d in docs])
    states = await wait_terminal(ctx, replay_jobs, ctx.profile.settle_s)
    after_docs, after_ids = await snapshot()
    changed = sorted(d for d in set(before_docs) | set(after_docs) if before_docs.get(d) != after_docs.get(d))
    uploads = len(docs) * ctx.profile.replays
    row.done = (
        f"uploaded the {len(docs)} accepted documents of scenario 1 again, same bytes, id and metadata, "
        f"{ctx.profile.replays} times; compared the document list (version, chunk count) and the tenant's "
        "chunk ids in Milvus before and after"
    )
    row.counts = [
        f"{uploads} uploads, {len(replay_jobs)} accepted; job states: "
        + ", ".join(f"{s or '?'} {n}" for s, n in sorted(Counter(states.values()).items())),
        f"{len(before_ids)} chunk ids before, {len(after_ids)} after",
        f"HTTP: {tally.summary()}",
    ]
    row.figures = [
        report.zero("documents changed", len(changed)),
        report.zero("chunk ids added or removed", len(before_ids ^ after_ids)),
        report.zero("replay jobs not done", sum(1 for s in states.values() if s != "done")),
        report.zero("uploads refused or 5xx", uploads - len(replay_jobs) + len(tally.bad_5xx)),
    ]
    if changed:
        row.counts.append(f"changed: {', '.join(changed[:5])}")
    row.figures.append(await _new_metadata(ctx, docs[: min(10, len(docs))]))
    return row


async def _new_metadata(ctx: Context, docs: list[Doc]) -> report.Figure:
    """Issue item 6: the same bytes with new metadata must reach the chunks (a filter on the new value finds
    the document, the old value no longer does)."""
    key = ctx.key("a")
    jobs = []
    for doc in docs:
        changed = Doc(
            doc.name, doc.data, doc.document_id, doc.marker, {**doc.metadata, "batch": "a-relabelled"}
        )
        job_id = await upload(ctx, key, changed)
        if job_id:
            jobs.append(job_id)
        ctx.docs_a[doc.document_id] = changed
    await wait_terminal(ctx, jobs, 60)
    stale = 0
    for doc in docs:
        for value, should_find in (("a-relabelled", True), ("a", False)):
            body = {
                "query": doc.marker,
                "top_k": 1,
                "filters": {"document_id": doc.document_id, "batch": value},
            }
            result = await ctx.api.call("POST", "/v1/search", key=key, retry_429=True, json=body)
            found = result.status == 200 and bool(result.json()["hits"])
            if found != should_find:
                stale += 1
                break
    return report.Figure(
        "re-uploads with new metadata whose chunks keep the old",
        f"{stale} of {len(docs)}",
        "0",
        stale == 0,
    )
