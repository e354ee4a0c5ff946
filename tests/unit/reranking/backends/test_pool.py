"""``RerankerPool`` (``RERANK_URLS``): real rerank servers (the app of ``sieve rerank-server`` on
``FakeReranker``), each served by uvicorn in a thread of this process on its own port, so that a test can
stop one and start it again on the same port; then the choices it makes on scripted answers
(``httpx.MockTransport``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.cli.stack import free_port, wait_for
from api.rerank_server import RerankServerSettings, create_rerank_app
from api.settings import ApiSettings
from reranking import RankedHit, RerankSettings, RerankUnavailableError
from reranking.backends import make_reranker
from reranking.backends.pool import RerankerPool
from reranking.backends.remote import QUEUE_DEPTH_HEADER, RemoteReranker
from reranking.errors import RerankInputError, RerankOverloadedError
from tests.support.fakes import FakeReranker

QUERY = "where do honey bees dance"
DOCS = ["Tides follow the moon.", "Honey bees dance to show where flowers grow.", "Bees make honey."]
EXPECTED = FakeReranker().rank(QUERY, DOCS)
TOKEN = "pool-test-token-0123456789"
QUIET = 600.0  # a health period no test waits for: the checks a test needs, it runs itself


class Server:
    """One rerank server on a fixed local port, started and stopped at will."""

    def __init__(self, model: FakeReranker, *, token: str = "") -> None:
        self.model = model
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        settings = RerankServerSettings(api=ApiSettings(), rerank=RerankSettings(server_token=self.token))
        app = create_rerank_app(settings, reranker=self.model)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server is not None and self._server.started, what="rerank server", timeout=30)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            assert not self._thread.is_alive(), "the rerank server did not stop"
        self._server = self._thread = None


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(model: FakeReranker | None = None, *, token: str = "") -> Server:
        server = Server(model or FakeReranker(), token=token)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.model.hold is not None:
            server.model.hold.set()
        server.stop()


@pytest.fixture
def pools() -> Iterator[Callable[..., RerankerPool]]:
    made: list[RerankerPool] = []

    def make(*servers: Server, health_period_s: float = QUIET, api_key: str = "") -> RerankerPool:
        pool = RerankerPool.from_urls(
            [s.url for s in servers], timeout_s=5.0, api_key=api_key, health_period_s=health_period_s
        )
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def state(pool: RerankerPool, server: Server) -> tuple[bool, int]:
    (found,) = [s for s in pool.servers() if s.url == server.url]
    return found.up, found.depth


def hold_direct(server: Server, count: int) -> list[threading.Thread]:
    """``count`` calls sent to ``server`` directly (another API's load), held in its model."""
    assert server.model.hold is not None
    before = len(server.model.calls)
    threads = [
        threading.Thread(
            target=httpx.post,
            args=(f"{server.url}/v1/rerank",),
            kwargs={"json": {"query": QUERY, "documents": DOCS}, "timeout": 30},
            daemon=True,
        )
        for _ in range(count)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: len(server.model.calls) == before + count, what="held calls", timeout=30)
    return threads


# -- the rerank server's depth -----------------------------------------------------------------------------


def test_the_server_reports_its_queue_depth(servers: Callable[..., Server]) -> None:
    busy = servers(FakeReranker(hold=threading.Event()))
    threads = hold_direct(busy, 3)
    ready = httpx.get(f"{busy.url}/ready").json()
    assert ready["queue_depth"] == 3
    assert httpx.get(f"{busy.url}/health").headers[QUEUE_DEPTH_HEADER] == "3"
    assert busy.model.hold is not None
    busy.model.hold.set()
    for t in threads:
        t.join(30)
    answer = httpx.post(f"{busy.url}/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert answer.status_code == 200 and answer.headers[QUEUE_DEPTH_HEADER] == "0"


# -- spreading ---------------------------------------------------------------------------------------------


def test_calls_go_to_the_server_with_the_shorter_queue(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    busy, idle = servers(FakeReranker(hold=threading.Event())), servers()
    pool = pools(busy, idle)
    threads = hold_direct(busy, 3)
    pool.warm_up()  # reads each /ready
    assert state(pool, busy) == (True, 3) and state(pool, idle) == (True, 0)
    for _ in range(6):
        assert pool.rank(QUERY, DOCS) == EXPECTED
    assert len(idle.model.calls) == 6 and len(busy.model.calls) == 3
    assert busy.model.hold is not None
    busy.model.hold.set()
    for t in threads:
        t.join(30)


def test_concurrent_calls_are_spread_by_calls_in_flight(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    hold = threading.Event()
    a, b = servers(FakeReranker(hold=hold)), servers(FakeReranker(hold=hold))
    pool = pools(a, b)
    answers: list[list[RankedHit]] = []
    callers = [threading.Thread(target=lambda: answers.append(pool.rank(QUERY, DOCS))) for _ in range(4)]
    for t in callers:
        t.start()
    wait_for(lambda: len(a.model.calls) + len(b.model.calls) == 4, what="4 calls in the models", timeout=30)
    assert (len(a.model.calls), len(b.model.calls)) == (2, 2)
    assert sorted(s.inflight for s in pool.servers()) == [2, 2]
    hold.set()
    for t in callers:
        t.join(30)
    assert answers == [EXPECTED] * 4 and [s.inflight for s in pool.servers()] == [0, 0]


# -- failing over, degrading, coming back ------------------------------------------------------------------


def test_no_error_reaches_the_caller_when_a_server_dies_mid_run(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    dying, staying = servers(), servers()
    pool = pools(dying, staying)
    answers: list[list[RankedHit]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                answers.append(pool.rank(QUERY, DOCS))
            except BaseException as exc:  # noqa: BLE001 - the test counts every error that reaches a caller
                errors.append(exc)

    callers = [threading.Thread(target=caller) for _ in range(3)]
    for t in callers:
        t.start()
    try:
        wait_for(lambda: len(dying.model.calls) >= 5, what="calls on the first server", timeout=30)
        dying.stop()
        after_kill = len(answers)
        dead_calls = len(dying.model.calls)
        wait_for(lambda: len(answers) >= after_kill + 30, what="30 answers after the kill", timeout=60)
    finally:
        stop.set()
        for t in callers:
            t.join(30)
    assert errors == []
    assert all(answer == EXPECTED for answer in answers)
    assert state(pool, dying)[0] is False and state(pool, staying)[0] is True
    assert len(dying.model.calls) == dead_calls  # nothing more reached it


def test_a_failing_server_is_taken_out_and_the_call_retried(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    broken, healthy = servers(FakeReranker(fail=RuntimeError("CUDA error"))), servers()
    pool = pools(broken, healthy)
    for _ in range(30):  # ties are broken at random: the broken one meets one of these calls
        assert pool.rank(QUERY, DOCS) == EXPECTED
    assert len(broken.model.calls) == 1 and len(healthy.model.calls) == 30
    (out,) = [s for s in pool.servers() if not s.up]
    assert out.url == broken.url and "500" in out.reason


def test_search_degrades_only_when_every_server_is_down(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    a, b = servers(), servers()
    pool = pools(a, b)
    a.stop()
    for _ in range(4):
        assert pool.rank(QUERY, DOCS) == EXPECTED
    b.stop()
    with pytest.raises(RerankUnavailableError):
        pool.rank(QUERY, DOCS)
    with pytest.raises(RerankUnavailableError, match="no rerank server of RERANK_URLS is in"):
        pool.rank(QUERY, DOCS)
    pool.check()  # still down: still out
    assert [s.up for s in pool.servers()] == [False, False]


def test_a_server_comes_back_once_ready_answers(
    servers: Callable[..., Server], pools: Callable[..., RerankerPool]
) -> None:
    back, other = servers(), servers()
    pool = pools(back, other, health_period_s=0.05)  # the background check, often
    pool.warm_up()
    back.stop()
    wait_for(lambda: not state(pool, back)[0], what="the stopped server out", timeout=30)
    for _ in range(3):
        assert pool.rank(QUERY, DOCS) == EXPECTED
    before = len(back.model.calls)
    back.start()
    wait_for(lambda: state(pool, back)[0], what="the restarted server back in", timeout=30)
    for _ in range(60):  # ties are broken at random: it gets one of these calls
        assert pool.rank(QUERY, DOCS) == EXPECTED
        if len(back.model.calls) > before:
            break
    assert len(back.model.calls) > before


# -- the token ---------------------------------------------------------------------------------------------


def test_the_token_is_sent_to_every_server(servers: Callable[..., Server]) -> None:
    a, b = servers(token=TOKEN), servers(token=TOKEN)
    settings = RerankSettings(backend="remote", urls=f"{a.url},{b.url}", server_token=TOKEN)
    pool = make_reranker(settings)
    assert isinstance(pool, RerankerPool)
    try:
        pool.warm_up()
        for _ in range(10):
            assert pool.rank(QUERY, DOCS) == EXPECTED
        assert len(a.model.calls) + len(b.model.calls) == 10
    finally:
        pool.close()
    without = make_reranker(settings.model_copy(update={"server_token": ""}))
    assert isinstance(without, RerankerPool)
    try:
        with pytest.raises(RerankUnavailableError, match="RERANK_SERVER_TOKEN"):
            without.rank(QUERY, DOCS)
    finally:
        without.close()
    assert len(a.model.calls) + len(b.model.calls) == 10  # refused before the model


# -- settings and factory ----------------------------------------------------------------------------------


def test_rerank_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_BACKEND", "remote")
    monkeypatch.setenv("RERANK_URLS", " http://a:8101/, http://b:8101,,http://a:8101")
    settings = RerankSettings()
    assert settings.server_urls() == ["http://a:8101", "http://b:8101"]
    pool = make_reranker(settings)
    assert isinstance(pool, RerankerPool) and pool.name == "remote:http://a:8101,http://b:8101"
    pool.close()
    monkeypatch.setenv("RERANK_URL", "http://c:8101")
    assert RerankSettings().server_urls() == ["http://c:8101", "http://a:8101", "http://b:8101"]
    monkeypatch.delenv("RERANK_URLS")
    one = make_reranker(RerankSettings())
    assert isinstance(one, RemoteReranker) and one.url == "http://c:8101"


# -- choices on scripted answers ---------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(handlers: dict[str, Handler]) -> RerankerPool:
    members = [
        RemoteReranker(url, client=httpx.Client(transport=httpx.MockTransport(handler)))
        for url, handler in handlers.items()
    ]
    return RerankerPool(members, health_period_s=QUIET)


def answer(depth: int, seen: list[str], name: str) -> Handler:
    """A server that says ``depth`` in ``/ready`` and in the header of its answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ready":
            return httpx.Response(200, json={"ready": True, "queue_depth": depth})
        seen.append(name)
        body = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}
        return httpx.Response(200, json=body, headers={QUEUE_DEPTH_HEADER: str(depth)})

    return handler


def test_the_depth_in_ready_steers_the_calls() -> None:
    seen: list[str] = []
    pool = scripted({"http://a": answer(5, seen, "a"), "http://b": answer(0, seen, "b")})
    pool.check()
    for _ in range(20):
        pool.rank("q", ["x", "y"])
    assert seen == ["b"] * 20
    pool.close()


def test_the_depth_in_an_answer_steers_the_next_call() -> None:
    seen: list[str] = []
    pool = scripted({"http://a": answer(5, seen, "a"), "http://b": answer(0, seen, "b")})
    for _ in range(20):
        pool.rank("q", ["x", "y"])
    # Ties go either way, but once a has said 5 it gets nothing more while b says 0.
    assert seen.count("a") <= 1 and seen.count("b") >= 19
    pool.close()


def test_a_full_server_is_passed_over_but_stays_in() -> None:
    seen: list[str] = []

    def full(request: httpx.Request) -> httpx.Response:
        seen.append("a")
        return httpx.Response(
            429, json={"error": {"message": "queue full"}}, headers={QUEUE_DEPTH_HEADER: "32"}
        )

    pool = scripted({"http://a": full, "http://b": answer(0, seen, "b")})
    for _ in range(20):
        assert [h.index for h in pool.rank("q", ["x", "y"])] == [1, 0]
    assert all(s.up for s in pool.servers())
    assert seen.count("a") <= 1  # after its 429 (depth 32) the calls go to b
    pool.close()


def test_both_full_is_overloaded_and_a_refused_request_is_not_retried() -> None:
    calls: list[str] = []

    def full(request: httpx.Request) -> httpx.Response:
        calls.append("full")
        return httpx.Response(429, json={"error": {"message": "queue full"}})

    pool = scripted({"http://a": full, "http://b": full})
    with pytest.raises(RerankOverloadedError):
        pool.rank("q", ["x"])
    assert len(calls) == 2 and all(s.up for s in pool.servers())
    pool.close()

    def too_many(request: httpx.Request) -> httpx.Response:
        calls.append("413")
        return httpx.Response(413, json={"error": {"message": "1001 documents"}})

    calls.clear()
    pool = scripted({"http://a": too_many, "http://b": too_many})
    with pytest.raises(RerankInputError, match="1001 documents"):
        pool.rank("q", ["x"])
    assert calls == ["413"] and all(s.up for s in pool.servers())
    pool.close()


class Ordered(random.Random):
    """Ties go to the first (or the last) server in line, so a test can fix the order a call meets them."""

    def __init__(self, last: bool) -> None:
        super().__init__(0)
        self.last = last

    def choice(self, seq):  # type: ignore[no-untyped-def,override] # random.Random's own signature
        return seq[-1] if self.last else seq[0]


@pytest.mark.parametrize("full_first", [True, False])
def test_a_full_server_and_a_dead_one_is_overloaded_not_unavailable(full_first: bool) -> None:
    def full(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": {"message": "queue full"}})

    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    members = [
        RemoteReranker(url, client=httpx.Client(transport=httpx.MockTransport(handler)))
        for url, handler in (("http://a", full), ("http://b", dead))
    ]
    pool = RerankerPool(members, health_period_s=QUIET, rng=Ordered(last=not full_first))
    with pytest.raises(RerankOverloadedError):  # 429 + Retry-After at the API: a live server is busy
        pool.rank("q", ["x"])
    assert {s.url: s.up for s in pool.servers()} == {"http://a": True, "http://b": False}
    pool.close()


def test_the_checker_ends_with_the_pool() -> None:
    pool = scripted({"http://a": answer(0, [], "a"), "http://b": answer(0, [], "b")})
    pool.warm_up()
    checker = pool._checker
    assert checker is not None and checker.is_alive()
    pool.close()
    checker.join(5)
    assert not checker.is_alive()
    pool.warm_up()  # closed: no checker starts again
    assert pool._checker is checker


# -- the API's search through the pool ---------------------------------------------------------------------


def test_search_through_the_pool(servers: Callable[..., Server], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from ingestion.settings import IngestSettings
    from tests.support import compat_harness as harness

    a, b = servers(), servers()
    settings = harness.settings(IngestSettings(data_dir=tmp_path / "files"), cache_ttl_s=0)
    settings.rerank = RerankSettings(backend="remote", urls=f"{a.url},{b.url}", health_period_s=QUIET)
    app = create_app(settings, resources_factory=harness.resources_factory(None))  # the pool, from settings
    docs = {"bees.md": "Honey bees dance to show where flowers grow.", "tides.txt": "Tides follow the moon."}

    def search(i: int) -> dict:
        r = client.post(
            "/v1/search", json={"query": f"where do bees dance {i}", "top_k": 2}, headers=harness.AUTH
        )
        assert r.status_code == 200
        return r.json()

    with TestClient(app) as client:
        harness.index(client.app_state["resources"], "t1", docs)
        for i in range(4):
            body = search(i)
            assert not body["degraded"] and body["rerank"]["applied"], body
        a.stop()
        for i in range(4):
            body = search(10 + i)
            assert not body["degraded"] and body["rerank"]["applied"], body
        b.stop()
        body = search(20)
        assert body["degraded"] is True and "unavailable" in body["degraded_reason"], body
        metrics = client.get("/metrics").text
    assert f'sieve_rerank_pool_server_up{{server="{a.url}"}} 0.0' in metrics
    assert f'sieve_rerank_pool_server_up{{server="{b.url}"}} 0.0' in metrics
    assert f'sieve_rerank_pool_calls_total{{outcome="ok",server="{b.url}"}}' in metrics
