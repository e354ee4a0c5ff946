"""What the scenarios share: the run's context and profile, uploads, waiting for jobs, and the check that
every accepted upload ended searchable with the right chunks (the "accepted-then-lost" figure)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from tests.reliability.corpus import Doc
from tests.reliability.harness import Api, Harness, KillRecord, ProcSpec, Result, Tally, gather_limited
from tests.reliability.probes import Probes

logger = logging.getLogger(__name__)

TERMINAL = ("done", "failed")


@dataclass(frozen=True)
class Profile:
    """The counts and durations of one mode (``--quick``, ``--full``, or the pytest run)."""

    name: str
    docs: int  # scenario 1
    kill_every_s: tuple[float, float] = (5.0, 15.0)
    ingest_timeout_s: float = 3600.0
    replays: int = 3
    outage_docs: int = 40  # per outage (Redis, Milvus)
    outage_s: float = 4.0
    outage_kills: int = 3  # kills mid-ingest per service (then one mid-query)
    query_phase_s: float = 8.0  # searches before the kill
    tamper_requests: int = 2200
    hostile_inputs: int = 900
    schemathesis_examples: int = 20
    bomb_mib: int = 400
    bomb_wait_s: float = 60.0  # how long the suite waits for the bombs past their upload (the goal is 60 s)
    big_bodies: bool = True  # oversize/chunked bodies and 10^6-char queries (slow where unfixed)
    overload_step_s: float = 15.0
    overload_run_s: float = 30.0
    settle_s: float = 240.0  # wait for jobs to end after the last kill or restart


FULL = Profile("full", docs=1000)
QUICK = Profile(
    "quick",
    docs=100,
    ingest_timeout_s=600,
    outage_docs=24,
    outage_s=3.0,
    outage_kills=2,
    query_phase_s=4.0,
    tamper_requests=400,
    hostile_inputs=240,
    schemathesis_examples=3,
    overload_step_s=5.0,
    overload_run_s=10.0,
    settle_s=120.0,
)


def override(profile: Profile, assignments: list[str]) -> Profile:
    """``profile`` with fields set from ``FIELD=VALUE`` strings (typed as the field's default)."""
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, _, raw = assignment.partition("=")
        if name not in Profile.__dataclass_fields__ or name == "name" or not raw:
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE with a field of Profile")
        current = getattr(profile, name)
        if isinstance(current, bool):
            changes[name] = raw.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, tuple):
            changes[name] = tuple(float(v) for v in raw.split(","))
        else:
            changes[name] = type(current)(raw)
    return replace(profile, **changes)


@dataclass
class Context:
    harness: Harness
    api: Api
    probes: Probes
    profile: Profile
    rng: random.Random = field(default_factory=lambda: random.Random(12))
    # What earlier scenarios left for later ones: tenant a's accepted documents (id -> Doc) and job ids.
    docs_a: dict[str, Doc] = field(default_factory=dict)
    jobs_a: dict[str, str] = field(default_factory=dict)

    def key(self, tag: str) -> str:
        return self.harness.tenants[tag].key

    def tenant(self, tag: str) -> str:
        return self.harness.tenants[tag].name

    def refresh_roots(self) -> None:
        self.probes.update(self.harness.roots())


async def restore(
    ctx: Context, name: str, spec: ProcSpec, record: KillRecord, *, grace_s: float = 0.5
) -> None:
    """Bring ``name`` back after a kill: a supervisor gets ``grace_s`` to do it, else the suite starts it
    again (from the event loop's thread, the main one)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if ctx.harness.supervised(name):
            record.replaced_by = "stack"
            ctx.refresh_roots()
            return
        await asyncio.sleep(0.05)
    ctx.harness.respawn(name, spec, record)
    ctx.refresh_roots()


async def upload(
    ctx: Context, key: str, doc: Doc, *, tally: Tally | None = None, until: float | None = None
) -> str | None:
    """Upload ``doc`` as a client would: 429 waits ``Retry-After``; a 503 or no answer is tried again each
    second until ``until`` (monotonic); returns the job id of the accepted upload, None if never accepted."""
    while True:
        result = await ctx.api.call(
            "POST",
            "/v1/documents",
            key=key,
            retry_429=True,
            files=[("files", (doc.name, doc.data))],
            data={"document_id": doc.document_id, "metadata": json.dumps(doc.metadata)},
        )
        if tally is not None:
            tally.add(f"upload {doc.document_id}", result)
        if result.status == 202:
            return str(result.json()["jobs"][0]["job_id"])
        if result.status not in (0, 503) or until is None or time.monotonic() > until:
            logger.warning("upload of %s not accepted: %s %s", doc.name, result.status, result.body[:300])
            return None
        await asyncio.sleep(1.0)


async def job_updates(ctx: Context, job_ids: list[str]) -> dict[str, tuple[str, float]] | None:
    """(state, last update time) of each job, read from Redis directly; None while Redis does not answer."""
    import redis

    try:
        return await asyncio.to_thread(ctx.harness.job_states, job_ids)
    except (redis.RedisError, OSError):
        return None


async def job_states(ctx: Context, job_ids: list[str]) -> dict[str, str] | None:
    """States read from Redis directly; None while Redis does not answer."""
    seen = await job_updates(ctx, job_ids)
    return None if seen is None else {j: state for j, (state, _) in seen.items()}


async def running_job(
    ctx: Context,
    job_ids: list[str],
    *,
    since: float,
    timeout_s: float = 120.0,
    stop: asyncio.Event | None = None,
) -> str | None:
    """Wait until one of ``job_ids`` is ``running`` and was updated after ``since`` (wall clock; a job left
    ``running`` by a killed worker does not count); returns it, or None once all of them ended, after
    ``timeout_s`` or when ``stop`` is set."""
    deadline = time.monotonic() + timeout_s
    finished: set[str] = set()
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        seen = await job_updates(ctx, [j for j in job_ids if j not in finished]) or {}
        finished.update(j for j, (state, _) in seen.items() if state in TERMINAL)
        if len(finished) == len(set(job_ids)):
            return None
        for job_id, (state, updated) in seen.items():
            if state == "running" and updated > since:
                return job_id
        await asyncio.sleep(0.02)
    return None


async def wait_terminal(ctx: Context, job_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Poll until every job is done or failed, or ``timeout_s`` passed; returns the last states seen."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {j: "" for j in job_ids}
    while True:
        pending = [j for j, s in states.items() if s not in TERMINAL]
        if not pending:
            return states
        seen = await job_states(ctx, pending)
        if seen:
            states.update(seen)
        if time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.5)


@dataclass
class Verdict:
    """Where each accepted upload ended (API view, plus Milvus read directly)."""

    accepted: int = 0
    lost: dict[str, list[str]] = field(default_factory=dict)  # reason -> document ids
    duplicate_ids: int = 0
    duplicate_positions: int = 0
    not_terminal: int = 0
    chunks: int = 0
    orphans: int = 0  # rows of the checked documents that are not of their listed, active version
    attempts: Counter[int] = field(default_factory=Counter)

    @property
    def lost_count(self) -> int:
        return len({d for ids in self.lost.values() for d in ids})

    def breakdown(self) -> str:
        if not self.lost:
            return "none"
        return ", ".join(f"{reason}: {len(ids)} (e.g. {ids[0]})" for reason, ids in sorted(self.lost.items()))


async def verify(
    ctx: Context, tag: str, accepted: dict[str, tuple[Doc, str]], *, search: bool = True
) -> Verdict:
    """Check every accepted upload of tenant ``tag`` (document id -> (doc, job id)): its job ended ``done``,
    the document is listed with no pending version and the job's chunk count, Milvus holds exactly that many
    rows of its active version (positions 0..n-1, no other version), a search for its marker finds it; and no
    chunk id or (document, version, position) is stored twice in the tenant's rows."""
    key, verdict = ctx.key(tag), Verdict(accepted=len(accepted))

    def lose(reason: str, document_id: str) -> None:
        verdict.lost.setdefault(reason, []).append(document_id)

    async def job(job_id: str) -> dict[str, Any]:
        result = await ctx.api.call("GET", f"/v1/jobs/{job_id}", key=key, retry_429=True)
        return result.json() if result.status == 200 else {"state": f"HTTP {result.status}"}

    jobs = await gather_limited(8, [job(j) for _, j in accepted.values()])
    listing = await ctx.api.call("GET", "/v1/documents", key=key, retry_429=True)
    documents = {d["document_id"]: d for d in listing.json()} if listing.status == 200 else {}
    rows = await asyncio.to_thread(ctx.harness.chunk_rows, ctx.tenant(tag))
    verdict.chunks = len(rows)
    ids = Counter(r["id"] for r in rows)
    verdict.duplicate_ids = sum(n - 1 for n in ids.values() if n > 1)
    places = Counter((r["doc_id"], r["version"], r["position"]) for r in rows)
    verdict.duplicate_positions = sum(n - 1 for n in places.values() if n > 1)
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_doc.setdefault(r["doc_id"], []).append(r)
    verdict.orphans = sum(
        1
        for r in rows
        if r["doc_id"] in accepted
        and (r["doc_id"] not in documents or documents[r["doc_id"]]["version"] != r["version"])
    )

    searchable: dict[str, bool] = {}
    if search:

        async def find(doc: Doc) -> bool:
            body = {"query": doc.marker, "top_k": 1, "filters": {"document_id": doc.document_id}}
            until = time.monotonic() + 30  # a 503 or no answer is tried again each second, as a client would
            while True:
                result = await ctx.api.call("POST", "/v1/search", key=key, retry_429=True, json=body)
                if result.status not in (0, 503) or time.monotonic() > until:
                    break
                logger.warning("search for %s: HTTP %s, trying again", doc.document_id, result.status)
                await asyncio.sleep(1.0)
            if result.status != 200:
                logger.warning("search for %s: HTTP %s %s", doc.document_id, result.status, result.body[:300])
                return False
            hits = result.json().get("hits", [])
            return bool(hits) and hits[0]["document_id"] == doc.document_id

        docs = [doc for doc, _ in accepted.values()]
        found = await gather_limited(4, [find(d) for d in docs])
        searchable = {d.document_id: ok for d, ok in zip(docs, found, strict=True)}

    for (document_id, (_doc, _job_id)), state in zip(accepted.items(), jobs, strict=True):
        verdict.attempts[int(state.get("attempts", 0))] += 1
        if state["state"] not in TERMINAL:
            verdict.not_terminal += 1
            lose(f"job {state['state'] or 'unknown'}", document_id)
            continue
        if state["state"] != "done":
            lose("job failed", document_id)
            continue
        listed = documents.get(document_id)
        if listed is None:
            lose("not listed", document_id)
            continue
        if listed.get("pending_version"):
            lose("version pending", document_id)
        stored = by_doc.get(document_id, [])
        active = [r for r in stored if r["version"] == listed["version"]]
        positions = sorted(r["position"] for r in active)
        if not (listed["chunks"] == state["chunks_total"] == len(active) > 0) or positions != list(
            range(len(active))
        ):
            lose("wrong chunk count", document_id)
        if len(stored) != len(active):
            lose("chunks of another version left", document_id)
        if search and not searchable.get(document_id):
            lose("not searchable", document_id)
    return verdict


def status_counts(tally: Tally) -> str:
    return tally.summary() or "none"


def first(results: list[Result]) -> Result | None:
    return results[0] if results else None
