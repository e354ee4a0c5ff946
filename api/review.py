"""The low-confidence review queue: the rule that flags a search, and where flagged searches wait for a label.

Rule: a search is flagged when its best score is below ``min_best`` and the spread of its hits' scores
(best - worst) is below ``min_spread`` - nothing scored well and nothing stood out. Thresholds are per rerank
backend because the scales differ (Qwen3 P(yes) and cross-encoder sigmoid in [0, 1]; stage-1 cosine when no
rerank ran). A search without hits is not flagged: there is nothing to label.

Queue: ``ReviewSink`` is the seam. ``ReviewQueue`` is the product one: a Redis Stream ``sieve:review``
(durable with the embedded stack's append-only file; entry ids are the item ids, in time order) with the
consumer group ``reviewers`` from which labelling workers ``claim`` items; labels live in the hash
``sieve:review:labels`` (a labelled item is acknowledged in the group). ``api.review_memory.MemoryReviewSink``
is for tests; ``tests/contract/review_sink.py`` holds both to the same behaviour.

Errors: ``ReviewError`` > ``ReviewNotFoundError`` (unknown id, or another tenant's), ``ReviewLabelError``
(a label that names passages the item does not have).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import redis
from pydantic import BaseModel, Field, computed_field

from ingestion import keyspace
from ingestion.keyspace import redis_call

STREAM = keyspace.REVIEW_STREAM
LABELS = keyspace.REVIEW_LABELS
GROUP = "reviewers"
State = Literal["pending", "labelled"]


class ReviewError(Exception):
    """Base of the review queue's errors."""


class ReviewNotFoundError(ReviewError):
    """No review item with this id (for this caller)."""


class ReviewLabelError(ReviewError, ValueError):
    """The label does not fit the item."""


# -- the rule ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verdict:
    backend: str
    best: float
    spread: float
    rule: tuple[float, float]


def rule_key(reranker_name: str, applied: bool) -> str:
    """The backend whose thresholds apply: the reranker's kind, or ``none`` when the order is stage 1's."""
    return reranker_name.split(":", 1)[0] if applied else "none"


def assess(
    scores: Sequence[float], *, backend: str, rules: Mapping[str, tuple[float, float]]
) -> Verdict | None:
    """A verdict when the scores are low-confidence under ``backend``'s rule (else ``*``'s), else None."""
    rule = rules.get(backend, rules.get("*"))
    if not scores or rule is None:
        return None
    best, spread = max(scores), max(scores) - min(scores)
    if best < rule[0] and spread < rule[1]:
        return Verdict(backend, best, spread, (rule[0], rule[1]))
    return None


# -- items ---------------------------------------------------------------------------------------------------
class ReviewCandidate(BaseModel):
    chunk_id: str
    document_id: str
    text: str
    score: float
    stage1_score: float
    rerank_score: float | None = None


class Label(BaseModel):
    positives: list[str] = Field(description="Chunk ids of the passages that answer the query; empty: none.")
    labelled_by: str
    labelled_at: float = Field(default_factory=time.time)


class ReviewItem(BaseModel):
    id: str = ""
    tenant: str
    query: str
    instruction: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict)
    candidates: list[ReviewCandidate]
    backend: str
    best: float
    spread: float
    rule: tuple[float, float]
    embedder: str
    reranker: str
    created_at: float = Field(default_factory=time.time)
    label: Label | None = None

    @computed_field  # type: ignore[prop-decorator] # pydantic's documented use on a property
    @property
    def state(self) -> State:
        return "pending" if self.label is None else "labelled"


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: no more items.")


def training_pairs(item: ReviewItem) -> Iterator[dict[str, Any]]:
    """A labelled item as (query, passage, label) pairs: 1 for the passages that answer it, 0 for the rest."""
    if item.label is None:
        return
    positives = set(item.label.positives)
    for c in item.candidates:
        yield {"query": item.query, "passage": c.text, "label": int(c.chunk_id in positives)}


# -- the seam ------------------------------------------------------------------------------------------------
class ReviewSink(Protocol):
    def add(self, item: ReviewItem) -> str:
        """Store a flagged item; returns its id (ids sort in the order items were added)."""

    def get(self, item_id: str) -> ReviewItem: ...

    def page(
        self,
        *,
        tenant: str | None = None,
        state: State | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ReviewPage:
        """Items in the order added, from ``since`` (epoch seconds) or after ``cursor``, filtered."""

    def label(self, item_id: str, positives: Sequence[str], *, by: str) -> ReviewItem:
        """Record (or replace) the item's label; raises ``ReviewLabelError`` for a chunk id it lacks."""

    def claim(self, reviewer: str, *, count: int = 10, idle_s: float = 600) -> list[ReviewItem]:
        """Hand unlabelled items to ``reviewer``: new ones, or ones another reviewer held ``idle_s``
        without labelling. An item is held by one reviewer at a time."""


MAX_PART = 2**64 - 1  # a stream id is two unsigned 64-bit numbers


def parse_id(item_id: str) -> tuple[int, int]:
    ms, _, seq = item_id.partition("-")
    if (
        not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit())
        or max(int(ms), int(seq)) > MAX_PART
    ):
        raise ReviewNotFoundError(f"no review item {item_id!r}")
    return int(ms), int(seq)


def first_id(since: float | None, cursor: str | None) -> tuple[int, int]:
    """The first id a page may hold."""
    start = (min(MAX_PART, max(0, int(since * 1000))), 0) if since and math.isfinite(since) else (0, 0)
    if cursor:
        try:
            ms, seq = parse_id(cursor)
        except ReviewNotFoundError:
            raise ReviewLabelError(f"cursor {cursor!r} is not one this API returned") from None
        after = (ms, seq + 1) if seq < MAX_PART else (min(MAX_PART, ms + 1), 0)
        start = max(start, after)
    return start


def select(items: Iterable[ReviewItem], *, tenant: str | None, state: State | None, limit: int) -> ReviewPage:
    chosen: list[ReviewItem] = []
    for item in items:
        if (tenant is None or item.tenant == tenant) and (state is None or item.state == state):
            chosen.append(item)
            if len(chosen) == limit:
                return ReviewPage(items=chosen, next_cursor=item.id)
    return ReviewPage(items=chosen, next_cursor=None)


def check_label(item: ReviewItem, positives: Sequence[str], by: str) -> Label:
    known = {c.chunk_id for c in item.candidates}
    unknown = [p for p in positives if p not in known]
    if unknown:
        raise ReviewLabelError(f"review item {item.id} has no candidate {unknown[0]!r}")
    return Label(positives=list(dict.fromkeys(positives)), labelled_by=by)


class ReviewQueue:
    """The durable ``ReviewSink``: a Redis Stream with a consumer group, and a hash of labels."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _items(self, entries: Sequence[tuple[str, dict[str, str]]]) -> list[ReviewItem]:
        ids = [entry_id for entry_id, _ in entries]
        labels: list[str | None] = redis_call(lambda: self._r.hmget(LABELS, ids)) if ids else []
        return [
            ReviewItem.model_validate_json(fields["item"]).model_copy(
                update={"id": entry_id, "label": Label.model_validate_json(raw) if raw else None}
            )
            for (entry_id, fields), raw in zip(entries, labels, strict=True)
        ]

    def add(self, item: ReviewItem) -> str:
        body = item.model_copy(update={"id": "", "label": None}).model_dump_json(exclude={"state"})

        def write() -> str:
            self._ensure_group()
            return str(self._r.xadd(STREAM, {"tenant": item.tenant, "item": body}))

        return redis_call(write)

    def get(self, item_id: str) -> ReviewItem:
        parse_id(item_id)
        found = self._items(redis_call(lambda: self._r.xrange(STREAM, min=item_id, max=item_id)))
        if not found:
            raise ReviewNotFoundError(f"no review item {item_id!r}")
        return found[0]

    def _scan(self, start: tuple[int, int], batch: int = 200) -> Iterator[ReviewItem]:
        low = f"{start[0]}-{start[1]}"
        while True:
            entries: list[tuple[str, dict[str, str]]] = redis_call(
                partial(self._r.xrange, STREAM, min=low, max="+", count=batch)
            )
            yield from self._items(entries)
            if len(entries) < batch:
                return
            ms, seq = parse_id(entries[-1][0])
            low = f"{ms}-{seq + 1}"

    def page(
        self,
        *,
        tenant: str | None = None,
        state: State | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ReviewPage:
        return select(self._scan(first_id(since, cursor)), tenant=tenant, state=state, limit=limit)

    def label(self, item_id: str, positives: Sequence[str], *, by: str) -> ReviewItem:
        item = self.get(item_id)
        label = check_label(item, positives, by)

        def write() -> None:
            self._ensure_group()
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(LABELS, item_id, label.model_dump_json())
            pipe.xack(STREAM, GROUP, item_id)
            pipe.execute()

        redis_call(write)
        return item.model_copy(update={"label": label})

    def claim(self, reviewer: str, *, count: int = 10, idle_s: float = 600) -> list[ReviewItem]:
        def unlabelled(entries: list[Any]) -> list[ReviewItem]:
            items = self._items([e for e in entries if e[1]])  # a trimmed entry comes back as (id, None)
            done = [i.id for i in items if i.label is not None]  # labelled before anyone claimed it
            if done:
                self._r.xack(STREAM, GROUP, *done)
            return [i for i in items if i.label is None]

        def take() -> list[ReviewItem]:
            self._ensure_group()
            reply: Any = self._r.xautoclaim(STREAM, GROUP, reviewer, int(idle_s * 1000), "0-0", count=count)
            items = unlabelled(reply[1])
            while len(items) < count:
                fresh: Any = self._r.xreadgroup(GROUP, reviewer, {STREAM: ">"}, count=count - len(items))
                entries = [e for _, batch in fresh or [] for e in batch]
                if not entries:
                    break
                items += unlabelled(entries)
            return items

        return redis_call(take)
