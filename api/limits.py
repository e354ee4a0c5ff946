"""Request caps and the bounded inference queue.

LimitError
├── LimitExceededError   a request over a configured cap: too many documents or inputs, a too-long input with
│                        truncation off (413, the message names the cap and its setting)
└── OverloadedError      the inference queue is full or a request waited too long for a slot
                         (429 with ``Retry-After``)

The ``InferenceQueue`` (the bounded inference queue) runs at most ``concurrency`` model calls at once and lets
at most ``queue`` more wait; one more is refused at once instead of piling up threads. Its depth is the
``sieve_inference_queue_depth`` gauge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from api import metrics


class LimitError(Exception):
    """Base class of the API's own limits."""


class LimitExceededError(LimitError):
    """A request over a configured cap."""


class OverloadedError(LimitError):
    """No inference slot now; retry after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def check_cap(count: int, cap: int, what: str, setting: str) -> None:
    """Raise ``LimitExceededError`` naming the cap when ``count`` passes it (a cap of 0 means none)."""
    if cap > 0 and count > cap:
        raise LimitExceededError(f"{count} {what} in one request; the limit is {cap} ({setting})")


class InferenceQueue:
    """A bounded queue in front of the models, for sync callers (routes run in the thread pool)."""

    def __init__(
        self, concurrency: int, queue: int, *, timeout_s: float = 30.0, retry_after_s: int = 1
    ) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"concurrency must be >= 1 and queue >= 0, got {concurrency} and {queue}")
        self.concurrency = concurrency
        self.queue = queue
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def _refuse(self, why: str) -> OverloadedError:
        metrics.OVERLOADED.inc()
        return OverloadedError(f"{why}; retry in {self.retry_after_s} s", self.retry_after_s)

    def _done_waiting(self) -> None:
        with self._lock:
            self._waiting -= 1
            metrics.QUEUE_DEPTH.dec()

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                full = self._waiting >= self.queue
                if not full:
                    self._waiting += 1
                    metrics.QUEUE_DEPTH.inc()
            if full:
                raise self._refuse(
                    f"the inference queue is full ({self.concurrency} running, {self.queue} waiting)"
                )
            try:
                got = self._slots.acquire(timeout=self.timeout_s)
            finally:
                self._done_waiting()
            if not got:
                raise self._refuse(f"no inference slot within {self.timeout_s:g} s")
        metrics.INFLIGHT.inc()
        try:
            yield
        finally:
            metrics.INFLIGHT.dec()
            self._slots.release()
