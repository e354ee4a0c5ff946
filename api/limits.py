"""Request caps and bounded admission: the inference queue of the model routes and the search queue.

LimitError
├── LimitExceededError   a request over a configured cap: too many documents or inputs, a too-long input with
│                        truncation off (413, the message names the cap and its setting)
└── OverloadedError      an admission queue is full or a request waited too long for a slot
                         (429 with ``Retry-After``)

An ``Admission`` gate runs at most ``concurrency`` pieces of work at once and lets ``queue`` more wait,
each for at most ``timeout_s``; one more is refused at once instead of piling up threads. The API has two:
the inference queue in front of the models (``API_INFERENCE_*``: ``/v1/rerank``, ``/v1/embeddings``,
``/v1/similarity``) and the search queue in front of ``/v1/search`` (``API_SEARCH_*``). The routes decide
admission on the event loop (``async with gate.admit()``) and only then hand the work to a thread, so a
refusal never waits for a thread of the saturated pool; code that already runs in a thread takes a slot with
``with gate.slot()``. Both draw on the same slots, waiters are served first come, first served. In front
of both, the API's outermost middleware (``api.errors.Shed``) answers 429 at once, before reading the body
or the key, while a gate is full (``shed``): a refusal must cost far less than the work it protects.

Length caps of text fields (``API_MAX_QUERY_CHARS``, ``API_MAX_INPUT_CHARS``) are checked with
``length_problems`` and ``reject`` before any admission, store or model call: 422 naming each field.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool

from api import metrics

T = TypeVar("T")


class LimitError(Exception):
    """Base class of the API's own limits."""


class LimitExceededError(LimitError):
    """A request over a configured cap."""


class OverloadedError(LimitError):
    """No slot now; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def check_cap(count: int, cap: int, what: str, setting: str) -> None:
    """Raise ``LimitExceededError`` naming the cap when ``count`` passes it (a cap of 0 means none)."""
    if cap > 0 and count > cap:
        raise LimitExceededError(f"{count} {what} in one request; the limit is {cap} ({setting})")


Field = tuple[str | int, ...]  # where a value sits in the body: ("documents", 3, "text")


def length_problems(fields: Iterable[tuple[Field, str]], cap: int, setting: str) -> list[dict[str, Any]]:
    """A validation problem (FastAPI's shape) for each field whose text is longer than ``cap`` characters
    (0: no cap)."""
    if cap <= 0:
        return []
    message = f"String should have at most {cap} characters ({setting})"
    return [
        {"type": "string_too_long", "loc": ("body", *loc), "msg": message}
        for loc, text in fields
        if len(text) > cap
    ]


def reject(problems: list[dict[str, Any]]) -> None:
    """422 naming the fields (the first ten), as a ``RequestValidationError``; nothing for no problem."""
    if problems:
        raise RequestValidationError(problems[:10])


async def run_admitted(gate: Admission, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the thread pool once ``gate`` admits it; admission is decided on the event loop."""
    async with gate.admit():
        return await run_in_threadpool(fn, *args)


WAITING, GRANTED, ABANDONED = "waiting", "granted", "abandoned"


class _Waiter:
    """One request waiting for a slot: a future on an event loop, or an event for a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.state = WAITING
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self.event = threading.Event() if loop is None else None

    def grant(self) -> None:
        """Called with the gate's lock held, from any thread."""
        self.state = GRANTED
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Admission:
    """Bounded work in flight, a bounded first-come-first-served wait, then a fast 429."""

    def __init__(
        self,
        concurrency: int,
        queue: int,
        *,
        timeout_s: float = 30.0,
        retry_after_s: int = 1,
        name: str = "inference queue",
        settings: str = "API_INFERENCE_CONCURRENCY, API_INFERENCE_QUEUE",
        depth: Gauge | None = None,
        inflight: Gauge | None = None,
        refused: Counter | None = None,
    ) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency} and {queue}")
        self.concurrency = concurrency
        self.queue = queue
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.name = name
        self.settings = settings
        self._depth = depth
        self._inflight = inflight
        self._refused = refused
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # -- deciding, with the lock held ----------------------------------------------------------------------
    def _enter(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """A slot now (None), a place in the queue (the waiter), or ``OverloadedError``."""
        with self._lock:
            if self._running < self.concurrency:
                self._running += 1
                return None
            if len(self._waiters) < self.queue:
                waiter = _Waiter(loop)
                self._waiters.append(waiter)
                self._gauge(self._depth, 1)
                return waiter
        raise self._full()

    def _full(self) -> OverloadedError:
        return self._refuse(
            f"the {self.name} is full ({self.concurrency} running, {self.queue} waiting; {self.settings})"
        )

    def _abandon(self, waiter: _Waiter) -> bool:
        """Leave the queue; False when a slot was granted meanwhile (the caller then holds it)."""
        with self._lock:
            if waiter.state == GRANTED:
                return False
            waiter.state = ABANDONED
            self._waiters.remove(waiter)
            self._gauge(self._depth, -1)
            return True

    def _release(self) -> None:
        """Hand the slot to the first waiter, else free it."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                self._gauge(self._depth, -1)
                waiter.grant()
                return
            self._running -= 1

    @staticmethod
    def _gauge(gauge: Gauge | None, delta: int) -> None:
        if gauge is not None:
            gauge.inc(delta)

    def _refuse(self, why: str) -> OverloadedError:
        if self._refused is not None:
            self._refused.inc()
        return OverloadedError(f"{why}; retry in {self.retry_after_s} s", self.retry_after_s)

    def _timed_out(self) -> OverloadedError:
        return self._refuse(f"no slot in the {self.name} within {self.timeout_s:g} s")

    @contextmanager
    def _holding(self) -> Iterator[None]:
        self._gauge(self._inflight, 1)
        try:
            yield
        finally:
            self._gauge(self._inflight, -1)
            self._release()

    def shed(self) -> OverloadedError | None:
        """The refusal, counted, when no slot is free and the queue is full right now; None otherwise. A
        look, not a reservation: the front door sheds with it before a request costs anything (the body,
        the key, the validation), and ``admit`` decides for the requests it lets in."""
        if self._running < self.concurrency or len(self._waiters) < self.queue:
            return None
        return self._full()

    # -- callers -------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Wait on the event loop (never in a thread) for a slot; ``OverloadedError`` when none comes."""
        waiter = self._enter(asyncio.get_running_loop())
        if waiter is not None:
            assert waiter.future is not None
            try:
                await asyncio.wait_for(waiter.future, self.timeout_s)
            except TimeoutError:
                if self._abandon(waiter):
                    raise self._timed_out() from None
                # granted just as the wait ended: the slot is ours
            except asyncio.CancelledError:  # the client went away
                if not self._abandon(waiter):
                    self._release()
                raise
        with self._holding():
            yield

    @contextmanager
    def slot(self) -> Iterator[None]:
        """The same for a caller in a thread: it blocks that thread while it waits."""
        waiter = self._enter(None)
        if waiter is not None:
            assert waiter.event is not None
            if not waiter.event.wait(self.timeout_s) and self._abandon(waiter):
                raise self._timed_out()
        with self._holding():
            yield


def inference_queue(
    concurrency: int, queue: int, *, timeout_s: float = 30.0, retry_after_s: int = 1
) -> Admission:
    """The queue in front of the model routes, with its metrics (``sieve_inference_*``)."""
    return Admission(
        concurrency,
        queue,
        timeout_s=timeout_s,
        retry_after_s=retry_after_s,
        name="inference queue",
        settings="API_INFERENCE_CONCURRENCY, API_INFERENCE_QUEUE",
        depth=metrics.QUEUE_DEPTH,
        inflight=metrics.INFLIGHT,
        refused=metrics.OVERLOADED,
    )
