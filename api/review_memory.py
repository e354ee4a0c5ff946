"""An in-process ``ReviewSink`` for tests: the behaviour of ``api.review.ReviewQueue``, nothing durable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from api.review import (
    ReviewItem,
    ReviewNotFoundError,
    ReviewPage,
    State,
    check_label,
    first_id,
    parse_id,
    select,
)


class MemoryReviewSink:
    """In-process ``ReviewSink`` for tests: the same behaviour as the Redis queue, nothing durable."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._items: dict[str, ReviewItem] = {}
        self._held: dict[str, tuple[str, float]] = {}  # item id -> (reviewer, since)
        self._last = (0, 0)
        self._clock = clock

    def add(self, item: ReviewItem) -> str:
        ms = int(self._clock() * 1000)
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        stored = item.model_copy(update={"id": f"{self._last[0]}-{self._last[1]}", "label": None})
        self._items[stored.id] = stored
        return stored.id

    def get(self, item_id: str) -> ReviewItem:
        parse_id(item_id)
        if item_id not in self._items:
            raise ReviewNotFoundError(f"no review item {item_id!r}")
        return self._items[item_id]

    def page(
        self,
        *,
        tenant: str | None = None,
        state: State | None = None,
        since: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ReviewPage:
        start = first_id(since, cursor)
        ordered = sorted(self._items.values(), key=lambda i: parse_id(i.id))
        return select(
            (i for i in ordered if parse_id(i.id) >= start), tenant=tenant, state=state, limit=limit
        )

    def label(self, item_id: str, positives: Sequence[str], *, by: str) -> ReviewItem:
        item = self.get(item_id)
        labelled = item.model_copy(update={"label": check_label(item, positives, by)})
        self._items[item_id] = labelled
        self._held.pop(item_id, None)
        return labelled

    def claim(self, reviewer: str, *, count: int = 10, idle_s: float = 600) -> list[ReviewItem]:
        now = self._clock()
        free = [
            i
            for i in sorted(self._items.values(), key=lambda i: parse_id(i.id))
            if i.label is None and (i.id not in self._held or now - self._held[i.id][1] >= idle_s)
        ]
        for item in free[:count]:
            self._held[item.id] = (reviewer, now)
        return free[:count]
