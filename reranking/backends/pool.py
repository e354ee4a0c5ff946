"""Several rerank servers as one ``Reranker``: ``RERANK_BACKEND=remote`` with ``RERANK_URLS`` (two or more).

Each call goes to the least loaded server that is in: load = the calls this pool has in flight there + the
queue depth the server last reported (``X-Sieve-Queue-Depth`` on every answer, ``queue_depth`` in ``/ready``);
ties are broken at random. A server that fails a call (cannot be reached, too slow, 5xx, a refused token, a
body that is not a rerank answer) is taken out and the call is retried once on another server; a 429 (that
server's queue is full) is retried once on another server without taking it out. A background thread asks
every server's ``/ready`` each ``RERANK_HEALTH_PERIOD_S``: a server out comes back once ``/ready`` answers
200, one in goes out when it stops answering, and the reported depths stay fresh.
``RerankUnavailableError`` (search then degrades to stage-1 order, as with one server) is raised when no
server is in, or when both servers a call met failed; a call that met a full server (429) and a failed one
is ``RerankOverloadedError`` (429 with ``Retry-After``: a live server is busy, the stage is not down); a
refused request (other 4xx) is the caller's ``RerankInputError`` at once, on no other server. A call meets at
most two servers, so that a dead server costs one retry, not a walk through the list.

Metrics (the default Prometheus registry, served by the API's ``/metrics``), labelled by server URL:
``sieve_rerank_pool_server_up`` (1 in, 0 out), ``sieve_rerank_pool_inflight``,
``sieve_rerank_pool_queue_depth`` (as last reported), ``sieve_rerank_pool_calls_total{outcome}`` (ok,
failed, overloaded, refused) and ``sieve_rerank_pool_retries_total`` (calls sent on to a second server).
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from reranking.backends.remote import RemoteReranker
from reranking.errors import RerankInputError, RerankOverloadedError, RerankUnavailableError
from reranking.reranker import RankedHit, check_rank_request

logger = logging.getLogger(__name__)

SERVER_UP = Gauge(
    "sieve_rerank_pool_server_up", "1 while a rerank server of the pool is in, 0 out", ["server"]
)
SERVER_INFLIGHT = Gauge(
    "sieve_rerank_pool_inflight", "Calls this API has in flight on a rerank server", ["server"]
)
SERVER_DEPTH = Gauge(
    "sieve_rerank_pool_queue_depth",
    "A rerank server's inference queue (running + waiting), last reported",
    ["server"],
)
SERVER_CALLS = Counter(
    "sieve_rerank_pool_calls",
    "Rerank calls by server and outcome: ok, failed, overloaded, refused",
    ["server", "outcome"],
)
RETRIES = Counter(
    "sieve_rerank_pool_retries", "Rerank calls sent on to a second server after the first failed"
)

ATTEMPTS = 2  # the first server, then one other


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server as the pool sees it (``RerankerPool.servers()``)."""

    url: str
    up: bool
    inflight: int
    depth: int
    reason: str  # why it is out ("" while in)


class _Server:
    def __init__(self, remote: RemoteReranker) -> None:
        self.remote = remote
        self.url = remote.url
        self.up = True
        self.inflight = 0
        self.depth = 0
        self.reason = ""

    @property
    def load(self) -> int:
        return self.inflight + self.depth


class RerankerPool:
    """A ``Reranker`` over several rerank servers (``members``: a ``RemoteReranker`` each); see the module."""

    reorders = True

    def __init__(
        self,
        members: Sequence[RemoteReranker],
        *,
        health_period_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not members:
            raise ValueError("a rerank pool needs at least one server (RERANK_URLS)")
        if health_period_s <= 0:
            raise ValueError(f"health_period_s must be positive, got {health_period_s}")
        self._servers = [_Server(m) for m in members]
        if len({s.url for s in self._servers}) != len(self._servers):
            raise ValueError("a rerank server is named twice in RERANK_URLS")
        self.health_period_s = health_period_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        for server in self._servers:
            SERVER_UP.labels(server.url).set(1)
            SERVER_INFLIGHT.labels(server.url).set(0)
            SERVER_DEPTH.labels(server.url).set(0)

    @classmethod
    def from_urls(
        cls, urls: Sequence[str], timeout_s: float = 2.0, *, api_key: str = "", health_period_s: float = 2.0
    ) -> RerankerPool:
        members = [RemoteReranker(url, timeout_s=timeout_s, api_key=api_key) for url in urls]
        return cls(members, health_period_s=health_period_s)

    @property
    def name(self) -> str:
        return "remote:" + ",".join(s.url for s in self._servers)

    @property
    def max_tokens(self) -> int | None:
        """None: the servers apply their own model's budget."""
        return None

    @property
    def revision(self) -> str | None:
        """None: the model's revision is the servers' to report."""
        return None

    @property
    def served_model(self) -> str | None:
        """The model name a server answered with (the servers are meant to serve one model)."""
        return next((s.remote.served_model for s in self._servers if s.remote.served_model), None)

    def servers(self) -> list[ServerState]:
        with self._lock:
            return [ServerState(s.url, s.up, s.inflight, s.depth, s.reason) for s in self._servers]

    # -- lifecycle -----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Ask every server's ``/ready`` now (those that do not answer are out until they do) and start the
        background check. Idempotent; search degrades while no server is in."""
        self.check()
        self._start_checker()

    def close(self) -> None:
        """Stop the background check and close the connections."""
        self._stop.set()
        checker = self._checker
        if checker is not None and checker is not threading.current_thread():
            checker.join(timeout=self.health_period_s + 5)
        for server in self._servers:
            server.remote.close()

    def check(self) -> None:
        """One round of the health check: every server's ``/ready``, outside the lock."""
        for server in self._servers:
            why = server.remote.probe()
            with self._lock:
                if why is None:
                    self._refresh_depth(server)
                    self._put_back(server)
                else:
                    self._take_out(server, why)

    def _start_checker(self) -> None:
        with self._lock:
            if self._checker is not None or self._stop.is_set():
                return
            self._checker = threading.Thread(
                target=_check_loop,
                args=(weakref.ref(self), self._stop, self.health_period_s),
                name="rerank-pool-health",
                daemon=True,
            )
            self._checker.start()

    # -- ranking -------------------------------------------------------------------------------------------
    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        check_rank_request(query, top_k)
        if not documents or top_k == 0:
            return []
        self._start_checker()
        tried: list[_Server] = []
        failed: RerankUnavailableError | None = None
        full: RerankOverloadedError | None = None  # wins over a failure: a live server is busy
        for attempt in range(ATTEMPTS):
            server = self._pick(tried)
            if server is None:
                break
            tried.append(server)
            if attempt:
                RETRIES.inc()
            outcome = "failed"
            try:
                hits = server.remote.rank(
                    query, documents, top_k=top_k, instruction=instruction, windows=windows
                )
                outcome = "ok"
                return hits
            except RerankInputError:
                outcome = "refused"
                raise
            except RerankOverloadedError as exc:
                outcome, full = "overloaded", exc
            except RerankUnavailableError as exc:
                failed = exc
                with self._lock:
                    self._take_out(server, str(exc))
            finally:
                SERVER_CALLS.labels(server.url, outcome).inc()
                self._release(server)
        if full is not None:
            raise full
        if failed is not None:
            raise failed
        raise RerankUnavailableError(self._all_out_message())

    def _pick(self, tried: Sequence[_Server]) -> _Server | None:
        """The least loaded server in and not tried yet (ties at random), its in-flight count taken."""
        with self._lock:
            candidates = [s for s in self._servers if s.up and s not in tried]
            if not candidates:
                return None
            least = min(s.load for s in candidates)
            server = self._rng.choice([s for s in candidates if s.load == least])
            server.inflight += 1
            SERVER_INFLIGHT.labels(server.url).set(server.inflight)
            return server

    def _release(self, server: _Server) -> None:
        with self._lock:
            server.inflight -= 1
            SERVER_INFLIGHT.labels(server.url).set(server.inflight)
            self._refresh_depth(server)

    # -- with the lock held --------------------------------------------------------------------------------
    def _refresh_depth(self, server: _Server) -> None:
        depth = server.remote.reported_depth
        if depth is not None:
            server.depth = depth
            SERVER_DEPTH.labels(server.url).set(depth)

    def _take_out(self, server: _Server, why: str) -> None:
        server.reason = why
        if server.up:
            server.up = False
            SERVER_UP.labels(server.url).set(0)
            logger.warning("rerank server %s is out of the pool: %s", server.url, why)

    def _put_back(self, server: _Server) -> None:
        server.reason = ""
        if not server.up:
            server.up = True
            SERVER_UP.labels(server.url).set(1)
            logger.info("rerank server %s is back in the pool", server.url)

    def _all_out_message(self) -> str:
        with self._lock:
            reasons = "; ".join(f"{s.url}: {s.reason or 'in'}" for s in self._servers)
        return f"no rerank server of RERANK_URLS is in ({reasons})"


def _check_loop(pool_ref: weakref.ref[RerankerPool], stop: threading.Event, period_s: float) -> None:
    """The background health check; it ends when the pool is closed or no longer referenced (a reload built
    another), holding only a weak reference between rounds."""
    while not stop.wait(period_s):
        pool = pool_ref()
        if pool is None:
            return
        try:
            pool.check()
        except Exception:  # noqa: BLE001 - the check must outlive one bad round; the next one retries
            logger.exception("the rerank pool's health check failed")
        del pool
