"""The official OpenAI and Cohere Python clients against the API, served by uvicorn on a free local port
(offline: the API runs on fakes in this process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import cohere
import numpy as np
import openai
import pytest
import uvicorn

from api.app import create_app
from api.cli.stack import free_port
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.fakes import FakeReranker, HashEmbedder

QUERY = "where do honey bees dance"
DOCS = ["Tides follow the moon.", "Honey bees dance to show where flowers grow.", "Bees make honey."]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ingest = IngestSettings(data_dir=tmp_path_factory.mktemp("files"))
    app = create_app(
        harness.settings(ingest, max_rerank_documents=5),
        resources_factory=harness.resources_factory(FakeReranker()),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def oai(url: str) -> Iterator[object]:
    client = openai.OpenAI(api_key=harness.KEY, base_url=f"{url}/v1", max_retries=0, timeout=10)
    yield client
    client.close()


def test_openai_embeddings_default_base64(oai: object) -> None:
    response = oai.embeddings.create(model="sieve", input=["honey bees", "tides"])  # type: ignore[attr-defined]
    expected = HashEmbedder().embed_documents(["honey bees", "tides"])
    assert [d.index for d in response.data] == [0, 1] and response.model == "test:hash-bow:64"
    assert np.allclose(np.array([d.embedding for d in response.data]), expected, atol=1e-7)
    assert response.usage.prompt_tokens == 3 and response.usage.total_tokens == 3


def test_openai_embeddings_float_and_dimensions(oai: object) -> None:
    response = oai.embeddings.create(  # type: ignore[attr-defined]
        model="sieve", input="honey bees dance", encoding_format="float", dimensions=16
    )
    (item,) = response.data
    assert len(item.embedding) == 16 and np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-5)


def test_openai_errors_keep_their_status(oai: object) -> None:
    with pytest.raises(openai.UnprocessableEntityError):
        oai.embeddings.create(model="sieve", input="")  # type: ignore[attr-defined]
    bad_key = openai.OpenAI(api_key="nope", base_url=str(oai.base_url), max_retries=0)  # type: ignore[attr-defined]
    with pytest.raises(openai.AuthenticationError):
        bad_key.embeddings.create(model="sieve", input="x")


def test_cohere_v2_rerank(url: str) -> None:
    co = cohere.ClientV2(api_key=harness.KEY, base_url=url, timeout=10)
    response = co.rerank(model="sieve", query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in response.results] == [1, 2]
    assert response.results[0].relevance_score == pytest.approx(0.8)
    assert response.id and response.meta.tokens.input_tokens > 0


def test_cohere_v1_rerank_returns_documents(url: str) -> None:
    co = cohere.Client(api_key=harness.KEY, base_url=url, timeout=10)
    response = co.rerank(model="sieve", query=QUERY, documents=DOCS, return_documents=True)
    assert [(r.index, r.document.text) for r in response.results] == [
        (1, DOCS[1]),
        (2, DOCS[2]),
        (0, DOCS[0]),
    ]


def test_cohere_errors_keep_their_status(url: str) -> None:
    co = cohere.ClientV2(api_key=harness.KEY, base_url=url, timeout=10)
    with pytest.raises(cohere.core.ApiError) as caught:
        co.rerank(model="sieve", query=QUERY, documents=["d"] * 6)
    assert caught.value.status_code == 413 and "API_MAX_RERANK_DOCUMENTS" in str(caught.value.body)


def test_cohere_client_sends_long_documents_and_reads_the_window(url: str) -> None:
    """Sieve's extension through the client's extra body: the results still parse, the window rides along."""
    co = cohere.ClientV2(api_key=harness.KEY, base_url=url, timeout=10)
    response = co.rerank(
        model="sieve",
        query=QUERY,
        documents=DOCS,
        request_options={"additional_body_parameters": {"long_documents": "windows"}},
    )
    assert [r.index for r in response.results] == [1, 2, 0]
    windows = [dict(r.model_extra or {}).get("window") for r in response.results]
    assert windows == [{"index": 0, "count": 1, "start": 0, "end": len(DOCS[i])} for i in (1, 2, 0)]
