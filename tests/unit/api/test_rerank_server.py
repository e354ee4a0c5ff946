"""``sieve rerank-server``'s app on a fake model, and ``RemoteReranker`` talking to it in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.rerank_server import RerankServerSettings, create_rerank_app
from api.settings import ApiSettings
from reranking import RerankError, RerankSettings
from reranking.backends.remote import RemoteReranker
from reranking.errors import RerankInputError
from tests.support.fakes import FakeReranker

QUERY = "where do honey bees dance"
DOCS = ["Tides follow the moon.", "Honey bees dance to show where flowers grow.", "Bees make honey."]


@pytest.fixture
def model() -> FakeReranker:
    return FakeReranker()


@pytest.fixture
def server(model: FakeReranker) -> Iterator[TestClient]:
    settings = RerankServerSettings(api=ApiSettings(max_rerank_documents=3))
    with TestClient(create_rerank_app(settings, reranker=model)) as client:
        yield client


def test_serves_the_rerank_routes_without_keys(server: TestClient) -> None:
    r = server.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 1})
    assert r.status_code == 200 and [x["index"] for x in r.json()["results"]] == [1]
    assert server.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    assert [x["index"] for x in server.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()] == [
        1,
        2,
        0,
    ]
    assert server.post("/v1/rerank", json={"query": QUERY, "documents": DOCS * 2}).status_code == 413


def test_health_ready_info_metrics_and_nothing_else(server: TestClient) -> None:
    assert server.get("/health").json() == {"status": "ok"}
    ready = server.get("/ready")
    assert ready.json() == {"ready": True, "checks": {"reranker": "test:overlap"}, "queue_depth": 0}
    assert ready.headers["X-Sieve-Queue-Depth"] == "0"
    info = server.get("/info").json()
    assert info["service"] == "sieve-rerank-server" and set(info["models"]) == {"reranker"}
    assert "max_embedding_inputs" not in info["limits"] and info["limits"]["max_rerank_documents"] == 3
    assert "sieve_inference_queue_depth" in server.get("/metrics").text
    assert server.post("/v1/embeddings", json={"input": "x"}).status_code == 404
    assert server.post("/v1/search", json={"query": "x"}).status_code == 404


def test_a_rerank_server_refuses_to_be_remote_itself() -> None:
    settings = RerankServerSettings(rerank=RerankSettings(backend="remote", url="http://127.0.0.1:1"))
    with (
        pytest.raises(RerankError, match="cannot use RERANK_BACKEND=remote"),
        TestClient(create_rerank_app(settings)),
    ):
        pass


def test_remote_reranker_round_trip(server: TestClient, model: FakeReranker) -> None:
    remote = RemoteReranker("http://testserver", client=server)
    assert remote.rank(QUERY, DOCS) == model.rank(QUERY, DOCS)
    assert remote.rank(QUERY, DOCS, top_k=2, instruction="Find bees") == model.rank(QUERY, DOCS, top_k=2)
    assert model.calls[-2][3] == "Find bees"  # the instruction reached the model
    with pytest.raises(RerankInputError, match="the limit is 3"):
        remote.rank(QUERY, DOCS * 2)


def test_the_rerank_server_sets_the_gil_switch_interval_of_its_settings(model: FakeReranker) -> None:
    """Its engine's batcher shares the GIL with the requests' threads (``api.process.gil_switch``)."""
    import sys

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        settings = RerankServerSettings(api=ApiSettings(gil_switch_ms=1.0))
        with TestClient(create_rerank_app(settings, reranker=model)) as client:
            assert client.get("/health").status_code == 200
            assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
