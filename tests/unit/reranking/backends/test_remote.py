"""``RemoteReranker``: the request it sends, and each way a rerank server can fail mapped to its error."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from reranking import (
    RankedHit,
    RerankError,
    RerankOverloadedError,
    RerankSettings,
    RerankUnavailableError,
    Window,
)
from reranking.backends import make_reranker
from reranking.backends.remote import RemoteReranker
from reranking.errors import RerankInputError

URL = "http://rerank.test:8101"


def remote(handler: Callable[[httpx.Request], httpx.Response]) -> RemoteReranker:
    return RemoteReranker(URL, timeout_s=0.5, client=httpx.Client(transport=httpx.MockTransport(handler)))


def cohere(results: list[tuple[int, float]]) -> httpx.Response:
    body = {"id": "x", "model": "m", "results": [{"index": i, "relevance_score": s} for i, s in results]}
    return httpx.Response(200, json=body)


def test_sends_a_cohere_request_and_reads_the_results() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and str(request.url) == f"{URL}/v1/rerank"
        seen.append(json.loads(request.content))
        return cohere([(2, 0.9), (0, 0.5)])

    reranker = remote(handler)
    hits = reranker.rank("q", ["a", "b", "c"], top_k=2, instruction="Find it")
    assert hits == [RankedHit(2, 0.9), RankedHit(0, 0.5)]
    assert seen == [
        {
            "query": "q",
            "documents": ["a", "b", "c"],
            "return_documents": False,
            "long_documents": "truncate",  # explicit: the server's RERANK_LONG_DOCUMENTS does not decide
            "top_n": 2,
            "instruction": "Find it",
        }
    ]
    assert reranker.name == f"remote:{URL}" and reranker.reorders and reranker.served_model == "m"


def test_no_call_for_nothing_to_rank() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert remote(handler).rank("q", []) == [] and remote(handler).rank("q", ["a"], top_k=0) == []
    with pytest.raises(RerankInputError):
        remote(handler).rank(" ", ["a"])


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "fragment"),
    [
        (_raise(httpx.ConnectError("connection refused")), RerankUnavailableError, "cannot be reached"),
        (_raise(httpx.ReadTimeout("slow")), RerankUnavailableError, "within 0.5 s"),
        (
            lambda r: httpx.Response(429, json={"error": {"status": 429, "message": "queue full"}}),
            RerankOverloadedError,
            "queue full",
        ),
        (
            lambda r: httpx.Response(413, json={"error": {"status": 413, "message": "1001 documents"}}),
            RerankInputError,
            "1001 documents",
        ),
        (
            lambda r: httpx.Response(503, json={"error": {"status": 503, "message": "loading"}}),
            RerankUnavailableError,
            "503: loading",
        ),
        (lambda r: httpx.Response(502, text="bad gateway"), RerankUnavailableError, "bad gateway"),
        (lambda r: httpx.Response(200, text="not json"), RerankUnavailableError, "no JSON"),
        (
            lambda r: httpx.Response(200, json={"results": [{"index": 7, "relevance_score": 1}]}),
            RerankUnavailableError,
            "outside",
        ),
        (lambda r: httpx.Response(200, json={"hits": []}), RerankUnavailableError, "unexpected"),
    ],
)
def test_failures_map_to_rerank_errors(
    handler: Callable[[httpx.Request], httpx.Response], error: type[RerankError], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        remote(handler).rank("q", ["a", "b"])


def test_factory_builds_it_from_settings() -> None:
    reranker = make_reranker(RerankSettings(backend="remote", url=URL + "/", timeout_s=1.5))
    assert isinstance(reranker, RemoteReranker) and reranker.url == URL and reranker.timeout_s == 1.5
    with pytest.raises(RerankError, match="RERANK_URL"):
        make_reranker(RerankSettings(backend="remote", url=""))


def test_warm_up_does_not_fail_when_the_server_is_down() -> None:
    remote(_raise(httpx.ConnectError("refused"))).warm_up()


def test_windows_are_asked_for_and_read_back() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        window = {"index": 2, "count": 3, "start": 10, "end": 30}
        results = [
            {"index": 1, "relevance_score": 0.9, "window": window},
            {"index": 0, "relevance_score": 0.4, "window": {"index": 0, "count": 1, "start": 0, "end": 1}},
        ]
        return httpx.Response(200, json={"id": "x", "model": "m", "results": results})

    hits = remote(handler).rank("q", ["a", "b" * 40], windows=True)
    assert seen[0]["long_documents"] == "windows"
    assert hits == [RankedHit(1, 0.9, Window(2, 3, 10, 30)), RankedHit(0, 0.4, Window(0, 1, 0, 1))]


@pytest.mark.parametrize(
    ("window", "fragment"),
    [
        (None, "window missing"),
        ({"index": 3, "count": 3, "start": 0, "end": 1}, "unexpected"),
        ({"index": 0, "count": 1, "start": 0}, "unexpected"),
        ({"index": 0, "count": 1, "start": 0, "end": 2}, "outside its document"),
    ],
)
def test_a_missing_or_wrong_window_is_a_failed_server(window: dict | None, fragment: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        result: dict = {"index": 0, "relevance_score": 0.5}
        if window is not None:
            result["window"] = window
        return httpx.Response(200, json={"results": [result]})

    with pytest.raises(RerankUnavailableError, match=fragment):
        remote(handler).rank("q", ["a"], windows=True)
    assert remote(handler).rank("q", ["a"]) == [RankedHit(0, 0.5)]  # not asked: not read
