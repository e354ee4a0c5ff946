"""The inference engine behind ``reranking.backends.make_reranker`` (``RERANK_BACKEND=qwen3-engine``; plain
``qwen3`` picks it on a "cuda" device): the factory's choice, the ``Reranker`` contract, equality with the
transformers backend, and the engine's errors as the stage's own.

The engine runs here on CPU (fp32, eager). Building is cheap and loads nothing, so the GPU choice is checked
on a machine without one. The adapter turns the engine's errors into the stage's (overloaded 429, unavailable
503 in ``api.errors``). The embedder side: ``tests/unit/retrieval/backends/test_qwen3_engine.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineInputError, EngineOverloadedError, EngineUnavailableError
from reranking import RerankOverloadedError, RerankUnavailableError
from reranking.backends import make_reranker
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.backends.qwen3_engine import EngineReranker
from reranking.errors import RerankInputError
from reranking.settings import RerankSettings
from tests.contract.reranker import DOCS, QUERY, RerankerContract


@pytest.fixture(scope="module")
def engine_reranker(tiny_qwen3_reranker_dir: Path) -> Iterator[EngineReranker]:
    reranker = make_reranker(RerankSettings(backend="qwen3-engine", model=str(tiny_qwen3_reranker_dir)))
    assert isinstance(reranker, EngineReranker)
    reranker.warm_up()
    yield reranker
    reranker.engine.close()


class TestEngineRerankerContract(RerankerContract):
    @pytest.fixture
    def reranker(self, engine_reranker: EngineReranker) -> EngineReranker:
        return engine_reranker


def test_qwen3_reranker_on_a_gpu_is_the_engine_under_the_same_name(tiny_qwen3_reranker_dir: Path) -> None:
    model = str(tiny_qwen3_reranker_dir)
    on_gpu = make_reranker(RerankSettings(backend="qwen3", model=model, device="cuda:0"))
    on_cpu = make_reranker(RerankSettings(backend="qwen3", model=model, device="cpu"))
    forced = make_reranker(RerankSettings(backend="qwen3-transformers", model=model, device="cuda"))
    assert isinstance(on_gpu, EngineReranker)
    assert isinstance(on_cpu, Qwen3Reranker) and isinstance(forced, Qwen3Reranker)
    assert on_gpu.name == on_cpu.name  # scores and caches are comparable across the two


def test_engine_reranker_ranks_as_qwen3_reranker(engine_reranker: EngineReranker, qwen3_reranker) -> None:
    got, want = engine_reranker.rank(QUERY, DOCS), qwen3_reranker.rank(QUERY, DOCS)
    assert [h.index for h in got] == [h.index for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-4)


@pytest.mark.parametrize(
    ("raised", "expected", "status"),
    [
        (EngineOverloadedError, RerankOverloadedError, 429),
        (EngineUnavailableError, RerankUnavailableError, 503),
        (EngineInputError, RerankInputError, 400),
    ],
)
def test_engine_errors_become_the_stages_errors(
    engine_reranker: EngineReranker, monkeypatch: pytest.MonkeyPatch, raised, expected, status: int
) -> None:
    """The stage's own error, with the HTTP status the API gave the engine's errors before the split."""
    from api.errors import status_for

    def refuse(*args: object, **kwargs: object) -> None:
        raise raised("refused")

    monkeypatch.setattr(engine_reranker.engine, "run", refuse)
    with pytest.raises(expected, match="refused") as reranked:
        engine_reranker.rank(QUERY, DOCS)
    assert status_for(reranked.value) == status


def test_engine_reports_the_windows_of_qwen3_reranker(tiny_qwen3_reranker_dir: Path) -> None:
    """Both backends share ``prepare_windows``: the same windows win, with the same spans."""
    model = str(tiny_qwen3_reranker_dir)
    engine = make_reranker(RerankSettings(backend="qwen3-engine", model=model, max_tokens=128))
    assert isinstance(engine, EngineReranker)
    plain = Qwen3Reranker(model, max_tokens=128)
    docs = [" ".join(f"fact {i}: Paris hosts museum number {i}." for i in range(40)), "Paris."]
    try:
        got, want = engine.rank(QUERY, docs, windows=True), plain.rank(QUERY, docs, windows=True)
    finally:
        engine.engine.close()
    assert [(h.index, h.window) for h in got] == [(h.index, h.window) for h in want]
    assert max(h.window.count for h in got if h.window is not None) > 1  # the long one was windowed
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-4)


def test_a_rerank_server_on_the_engine_exports_its_counters(engine_reranker: EngineReranker) -> None:
    """``GET /metrics`` reads the engine's counters at each scrape: one request of the five documents adds a
    batch, the request, five sequences and their tokens (the template's shared head computed once)."""
    import re

    from fastapi.testclient import TestClient

    from api.rerank_server import create_rerank_app

    def counters(text: str) -> dict[str, float]:
        pattern = r'^(sieve_engine_\w+_total)\{(?:kind="(\w+)",)?model="reranker"\} (\S+)$'
        return {f"{m[1]}:{m[2] or ''}": float(m[3]) for m in re.finditer(pattern, text, re.MULTILINE)}

    with TestClient(create_rerank_app(reranker=engine_reranker)) as client:
        before = counters(client.get("/metrics").text)
        assert client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
        after = counters(client.get("/metrics").text)
    gained = {name: after[name] - before[name] for name in after}
    assert gained["sieve_engine_batches_total:"] == 1 and gained["sieve_engine_requests_total:"] == 1
    assert gained["sieve_engine_sequences_total:"] == len(DOCS)
    assert 0 < gained["sieve_engine_tokens_total:computed"] < gained["sieve_engine_tokens_total:served"]
    assert gained["sieve_engine_device_seconds_total:"] > 0
