"""Scenario 5: tenant b's key on tenant a's objects, thousands of ways; a foreign object must never come back.

A response counts as leaking a foreign object when it carries something of tenant a that the request did
not itself contain (a marker word of a's documents, a's document ids, job ids or review item ids: a 404 that
echoes the id asked for is not a leak), or when a request aimed at one of a's objects is answered 2xx (a
read, a delete, a label). Afterwards tenant a's documents must be exactly as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from tests.reliability import report
from tests.reliability.corpus import corpus
from tests.reliability.harness import Tally, gather_limited
from tests.reliability.report import Row
from tests.reliability.scenarios.common import Context, upload, wait_terminal

logger = logging.getLogger(__name__)

OFF_TOPIC = ["qwv plorf znark", "xylophone tax refunds in 1750", "brvvt mmmq", "zzzz zzzz", "gribble wump"]


@dataclass
class Attempt:
    label: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    aimed: bool = False  # aimed at one of a's objects: any 2xx is a leak


def _variants(value: str, tenant: str) -> list[str]:
    """Ways to write ``value`` in a path segment that a careless server might map back to it."""
    enc = quote(value, safe="")
    return [
        value,
        enc,
        quote(enc, safe=""),
        value.upper(),
        f"..%2F{enc}",
        f"%2e%2e%2f{enc}",
        f"%252e%252e%252f{enc}",
        f"..%5C{enc}",
        f"{tenant}%2F{enc}",
        f"{tenant}:{enc}",
        f"{tenant}%3A{enc}",
        f"{enc}%00",
        f"{enc}%00.md",
        f"{enc}%20",
        f"%20{enc}",
        f"{enc}%2F",
        f"{enc}?tenant={tenant}",
        f"{enc}?tenant_id={tenant}&as={tenant}",
        f"..%2F..%2F{tenant}%2F{enc}",
        f"%2F{enc}",
        f".%2F{enc}",
        f"{enc}%23",
        f"{enc}*",
        "%2A",
        f"{enc[:-1]}%25",
    ]


def _filters(doc_id: str, tenant: str, own: str) -> list[dict[str, Any]]:
    return [
        {"tenant": tenant},
        {"document_id": doc_id},
        {"doc_id": doc_id},
        {"document_id": doc_id, "tenant": tenant},
        {"metadata.tenant": tenant},
        {"id": doc_id},
        {"version": "*"},
        {"filename": f"{doc_id}.md"},
        {"batch": "a"},
        {"tenant": f'{own}" or tenant == "{tenant}'},
        {"document_id": f'{doc_id}" or tenant == "{tenant}'},
        {"document_id": 'x" || tenant like "%'},
        {"document_id": "x' or '1'=='1"},
        {"document_id": f'{doc_id}\\" or tenant != \\"'},
        {'document_id" or tenant == "' + tenant: 1},
        {'tenant == "' + tenant + '" or doc_id': doc_id},
        {"batch": 'a" or 1 == 1 or "'},
        {"n": 0, "tenant": tenant},
        {"document_id": doc_id.upper()},
        {"document_id": f"{tenant}/{doc_id}"},
    ]


def _request_text(attempt: Attempt) -> str:
    """Everything the request itself said, decoded every way a server could decode it."""
    parts = [
        attempt.path,
        unquote(attempt.path),
        unquote(unquote(attempt.path)),
        unquote(unquote(unquote(attempt.path))),
    ]
    for value in attempt.kwargs.values():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts += [text, text.replace('\\"', '"').replace("\\\\", "\\")]
        if isinstance(value, dict):
            parts += [str(v) for v in _leaves(value)] + [str(k) for k in _keys(value)]
    return "\n".join(parts)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value.keys(), *(k for v in value.values() for k in _keys(v))]
    return []


async def _ensure_docs_a(ctx: Context, count: int) -> None:
    """Scenario 1 left tenant a's documents; when run alone, ingest a few."""
    if ctx.docs_a:
        return
    docs = corpus("a", count)
    jobs = {}
    for doc in docs:
        job_id = await upload(ctx, ctx.key("a"), doc)
        if job_id:
            jobs[doc.document_id] = job_id
    await wait_terminal(ctx, list(jobs.values()), ctx.profile.settle_s)
    ctx.docs_a.update({d.document_id: d for d in docs if d.document_id in jobs})
    ctx.jobs_a.update(jobs)


async def tamper(ctx: Context) -> Row:
    row = Row("tenants", "cross-tenant tampering")
    a, b = ctx.tenant("a"), ctx.tenant("b")
    key_a, key_b = ctx.key("a"), ctx.key("b")
    await _ensure_docs_a(ctx, 12)
    own_b = corpus("b", 5, large_every=0)
    b_jobs = [j for j in [await upload(ctx, key_b, d) for d in own_b] if j]
    await wait_terminal(ctx, b_jobs, 120)

    # Review items of tenant a (low-confidence searches carry a's passages), found with the admin key.
    for query in OFF_TOPIC:
        await ctx.api.call("POST", "/v1/search", key=key_a, retry_429=True, json={"query": query, "top_k": 5})
    listing = await ctx.api.call(
        "GET", "/v1/review", key=ctx.harness.admin_key, params={"tenant": a, "limit": 50}
    )
    review_ids = [i["id"] for i in listing.json().get("items", [])] if listing.status == 200 else []

    listing_a = await ctx.api.call("GET", "/v1/documents", key=key_a, retry_429=True)
    before = {
        d["document_id"]: (d["version"], d["chunks"], json.dumps(d["metadata"], sort_keys=True))
        for d in listing_a.json()
    }
    b_ids = {d.document_id for d in own_b}
    secrets = {d.marker for d in ctx.docs_a.values()} | {d for d in ctx.docs_a if d not in b_ids}
    secrets |= set(ctx.jobs_a.values()) | set(review_ids)
    pattern = re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True)))

    attempts: list[Attempt] = []
    docs = list(ctx.docs_a.values())
    jobs = list(ctx.jobs_a.values())
    index = 0
    while len(attempts) < ctx.profile.tamper_requests:
        doc = docs[index % len(docs)]
        job = jobs[index % len(jobs)]
        for v in _variants(doc.document_id, a):
            attempts.append(Attempt("GET document", "GET", f"/v1/documents/{v}", aimed=True))
        for v in _variants(doc.document_id, a)[:: 3 if index else 1]:
            attempts.append(Attempt("DELETE document", "DELETE", f"/v1/documents/{v}", aimed=True))
        for v in _variants(job, a)[:12]:
            attempts.append(Attempt("GET job", "GET", f"/v1/jobs/{v}", aimed=True))
        modes = [None, "dense", "bm25", "hybrid"]
        for n, filters in enumerate(_filters(doc.document_id, a, b)):
            body: dict[str, Any] = {"query": doc.marker, "top_k": 20, "filters": filters}
            if modes[n % 4]:
                body["mode"] = modes[n % 4]
            attempts.append(Attempt("search with filters", "POST", "/v1/search", {"json": body}))
        attempts.append(
            Attempt(
                "search for a's marker",
                "POST",
                "/v1/search",
                {"json": {"query": doc.marker, "top_k": 50, "mode": "bm25"}},
            )
        )
        attempts.append(
            Attempt(
                "search for a's marker",
                "POST",
                "/v1/search",
                {"json": {"query": f"{doc.marker} {doc.document_id}", "candidates": 500, "top_k": 100}},
            )
        )
        for params in ({"tenant": a}, {"tenant_id": a}, {"as": a, "tenant": a}):
            attempts.append(Attempt("list documents", "GET", "/v1/documents", {"params": params}))
        for header in ({"X-Tenant": a}, {"X-Tenant-Id": a}, {"X-API-Key": a}, {"X-Forwarded-User": a}):
            attempts.append(Attempt("list documents", "GET", "/v1/documents", {"headers": header}))
        if index % 4 == 0:
            for path in ("/v1/review", "/v1/review/export", "/v1/review/clusters"):
                attempts.append(Attempt("review of a", "GET", path, {"params": {"tenant": a}}))
                attempts.append(Attempt("own review", "GET", path))
            attempts.append(
                Attempt(
                    "claim", "POST", "/v1/review/claim", {"params": {"reviewer": "b", "count": 5}}, aimed=True
                )
            )
            for path in ("/v1/admin/reindex", "/v1/admin/reindex/drop-old", "/v1/admin/reload"):
                attempts.append(Attempt("admin route", "POST", path, {"json": {}}, aimed=True))
            attempts.append(Attempt("admin route", "GET", "/v1/admin/reindex", aimed=True))
        for item in review_ids[index % max(1, len(review_ids)) :][:3]:
            for v in _variants(item, a)[:6]:
                attempts.append(Attempt("review item of a", "GET", f"/v1/review/{v}", aimed=True))
                attempts.append(
                    Attempt("label a's item", "POST", f"/v1/review/{v}", {"json": {"none": True}}, aimed=True)
                )
        index += 1

    tally = Tally()
    leaks: list[str] = []

    async def send(attempt: Attempt) -> None:
        kwargs = dict(attempt.kwargs)
        headers = {"Authorization": f"Bearer {key_b}", **kwargs.pop("headers", {})}
        result = await ctx.api.call(attempt.method, attempt.path, retry_429=True, headers=headers, **kwargs)
        tally.add(f"{attempt.method} {attempt.path}", result)
        # b's own review items hold b's earlier queries, which named a's markers and ids: only their
        # candidates' document ids and tenants say whose passages they show.
        own_review = attempt.path.startswith("/v1/review") and not attempt.aimed
        found = {m.group(0) for m in pattern.finditer(result.body)}
        leaked = (found & set(review_ids)) if own_review else found
        leaked -= _echoed(attempt, result.body, pattern)
        if 200 <= result.status < 300:
            leaked |= _foreign_fields(_json(result.body), b_ids, b)
        if (attempt.aimed and 200 <= result.status < 300) or leaked:
            leaks.append(
                f"{attempt.label}: {attempt.method} {attempt.path} -> {result.status} {sorted(leaked)[:3]}"
            )

    await gather_limited(8, [send(x) for x in attempts])

    # b uploads under a's document ids: b gets a document of its own, a's stays as it was.
    overwrite = list(ctx.docs_a)[:5]
    takeover = 0
    for n, document_id in enumerate(overwrite):
        fake = own_b[n % len(own_b)]
        forged = type(fake)(fake.name, fake.data, document_id, fake.marker, {"tenant": a})
        job_id = await upload(ctx, key_b, forged, tally=tally)
        if job_id:
            await wait_terminal(ctx, [job_id], 60)
        seen = await ctx.api.call(
            "GET", f"/v1/documents/{quote(document_id, safe='')}", key=key_b, retry_429=True
        )
        if seen.status == 200 and seen.json().get("version") == before.get(document_id, ("",))[0]:
            takeover += 1
            leaks.append(f"b's upload under a's id {document_id} shows a's version")
    after_a = await ctx.api.call("GET", "/v1/documents", key=key_a, retry_429=True)
    after = {
        d["document_id"]: (d["version"], d["chunks"], json.dumps(d["metadata"], sort_keys=True))
        for d in after_a.json()
    }
    changed = sorted(d for d in before if before[d] != after.get(d))
    leaks += [f"a's document {d} changed" for d in changed]

    families: dict[str, int] = {}
    for attempt in attempts:
        families[attempt.label] = families.get(attempt.label, 0) + 1
    row.done = (
        "tenant b's key on tenant a's document ids, job ids and review item ids, each written ~25 ways "
        "(url-encoded, double-encoded, ../, %2F, %00, tenant prefixes, query and header overrides); searches "
        "with filters naming tenant fields and expression injections; a's review queue, export, clusters, "
        "claim and admin routes; b uploads under a's ids; then a's documents compared with before"
    )
    row.counts = [
        f"{len(attempts) + len(overwrite)} tampered requests over {index} of a's documents, "
        f"{len(review_ids)} of a's review items",
        ", ".join(f"{label} {n}" for label, n in sorted(families.items())),
        f"HTTP: {tally.summary()}",
    ]
    row.figures = [
        report.zero("foreign objects returned or touched", len(leaks)),
        report.zero("a's documents changed", len(changed)),
        report.zero("5xx (not 503)", len(tally.bad_5xx)),
    ]
    if ctx.profile.name == "full":
        row.figures.append(
            report.at_least("tampered requests", len(attempts) + len(overwrite), 2000, digits=0)
        )
    if leaks:
        row.counts.append("leaks: " + "; ".join(leaks[:5]))
    if tally.bad_5xx:
        row.counts.append("5xx: " + "; ".join(tally.bad_5xx[:3]))
    await asyncio.sleep(0)
    return row


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:  # the review export is JSON lines
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows


def _foreign_fields(value: Any, own_ids: set[str], own_tenant: str) -> set[str]:
    """Document ids and tenant names in a response that are not the caller's (a review item's ``filters``,
    ``query`` and ``instruction`` are what the caller sent, not objects)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("filters", "query", "instruction", "queries", "typical_queries"):
                continue
            if k in ("document_id", "doc_id") and isinstance(v, str) and v not in own_ids:
                found.add(f"{k}={v}")
            elif k == "tenant" and isinstance(v, str) and v != own_tenant:
                found.add(f"tenant={v}")
            else:
                found |= _foreign_fields(v, own_ids, own_tenant)
    elif isinstance(value, list):
        for v in value:
            found |= _foreign_fields(v, own_ids, own_tenant)
    return found


def _echoed(attempt: Attempt, body: str, pattern: re.Pattern[str]) -> set[str]:
    """The secrets that the request itself named (a 404 echoing them leaks nothing)."""
    return {m.group(0) for m in pattern.finditer(_request_text(attempt))}
