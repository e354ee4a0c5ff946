"""The ``Reranker`` contract (``tests/contract/reranker.py``) on the tiny Qwen3Reranker, the tiny
cross-encoder, ``maxsim`` over the bundled MiniLM, the ``none`` backend, ``RemoteReranker`` in front of a
rerank server (in-process) serving the tiny cross-encoder, ``RerankerPool`` in front of two such servers, and
the test fake ``FakeReranker`` in its position-independent scorings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reranking.backends import make_reranker
from reranking.reranker import NoneReranker, Reranker
from reranking.settings import RerankSettings
from tests.contract.reranker import DOCS, QUERY, RerankerContract
from tests.support.fakes import FakeReranker


@pytest.fixture(scope="module")
def maxsim_reranker(minilm_dir: Path) -> Reranker:
    from reranking.backends.maxsim import MaxSimReranker

    reranker = MaxSimReranker(model=str(minilm_dir), batch_size=4)
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="module")
def remote_reranker(cross_encoder_reranker: Reranker) -> Iterator[Reranker]:
    from fastapi.testclient import TestClient

    from api.rerank_server import create_rerank_app
    from reranking.backends.remote import RemoteReranker

    with TestClient(create_rerank_app(reranker=cross_encoder_reranker)) as server:
        yield RemoteReranker("http://testserver", client=server)


@pytest.fixture(scope="module")
def pool_reranker(cross_encoder_reranker: Reranker) -> Iterator[Reranker]:
    from fastapi.testclient import TestClient

    from api.rerank_server import create_rerank_app
    from reranking.backends.pool import RerankerPool
    from reranking.backends.remote import RemoteReranker

    with (
        TestClient(create_rerank_app(reranker=cross_encoder_reranker)) as one,
        TestClient(create_rerank_app(reranker=cross_encoder_reranker)) as two,
    ):
        pool = RerankerPool(
            [RemoteReranker("http://one", client=one), RemoteReranker("http://two", client=two)]
        )
        yield pool
        pool.close()


@pytest.fixture(
    params=[
        "qwen3_reranker",
        "cross_encoder_reranker",
        "maxsim_reranker",
        "none",
        "remote_reranker",
        "pool_reranker",
        "fake",
        "fake-shortest",
    ]
)
def reranker(request: pytest.FixtureRequest) -> Reranker:
    if request.param == "none":
        return NoneReranker()
    if request.param == "fake":
        return FakeReranker()
    if request.param == "fake-shortest":
        return FakeReranker("shortest")
    return request.getfixturevalue(request.param)


class TestRerankerContract(RerankerContract):
    """Every backend of the reranker table, and the one fake."""


def test_factory_passes_keywords_the_backends_accept(
    tiny_qwen3_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    from reranking.backends.cross_encoder import CrossEncoderReranker
    from reranking.backends.qwen3 import Qwen3Reranker

    qwen = make_reranker(
        RerankSettings(backend="qwen3", model=str(tiny_qwen3_reranker_dir), max_tokens=512, batch_size=4)
    )
    assert isinstance(qwen, Qwen3Reranker) and qwen.max_tokens == 512
    ce = make_reranker(RerankSettings(backend="cross-encoder", model=str(tiny_cross_encoder_dir)))
    assert isinstance(ce, CrossEncoderReranker) and len(ce.rank(QUERY, DOCS)) == len(DOCS)
    assert isinstance(make_reranker(RerankSettings(backend="none")), NoneReranker)


def test_remote_scores_are_the_served_model_scores(
    remote_reranker: Reranker, pool_reranker: Reranker, cross_encoder_reranker: Reranker
) -> None:
    expected = cross_encoder_reranker.rank(QUERY, DOCS, top_k=3)
    assert remote_reranker.rank(QUERY, DOCS, top_k=3) == expected
    for _ in range(4):  # whichever server of the pool answers
        assert pool_reranker.rank(QUERY, DOCS, top_k=3) == expected


def test_remote_and_pool_carry_the_windows_of_the_served_model(tiny_qwen3_reranker_dir: Path) -> None:
    """A rerank server on a Qwen3 reranker with a short budget: through ``RemoteReranker`` and the pool,
    ``windows=True`` gives the served model's hits, windows included; without it, its hits and none."""
    from fastapi.testclient import TestClient

    from api.rerank_server import create_rerank_app
    from reranking.backends.pool import RerankerPool
    from reranking.backends.qwen3 import Qwen3Reranker
    from reranking.backends.remote import RemoteReranker

    served = Qwen3Reranker(model=str(tiny_qwen3_reranker_dir), max_tokens=128)
    docs = [" ".join(f"fact {i}: Paris hosts museum number {i}." for i in range(40)), *DOCS]
    local = served.rank(QUERY, docs, windows=True)
    long_hit = next(h for h in local if h.index == 0)
    assert long_hit.window is not None and long_hit.window.count > 1  # it was windowed
    with (
        TestClient(create_rerank_app(reranker=served)) as one,
        TestClient(create_rerank_app(reranker=served)) as two,
    ):
        remote = RemoteReranker("http://one", client=one)
        pool = RerankerPool(
            [RemoteReranker("http://one", client=one), RemoteReranker("http://two", client=two)]
        )
        try:
            assert remote.rank(QUERY, docs, windows=True) == local
            assert remote.rank(QUERY, docs, top_k=2, windows=True) == local[:2]
            assert remote.rank(QUERY, docs) == served.rank(QUERY, docs)
            for _ in range(3):
                assert pool.rank(QUERY, docs, windows=True) == local
        finally:
            pool.close()
