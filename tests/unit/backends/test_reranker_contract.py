"""One contract for every ``Reranker``: tiny Qwen3Reranker, tiny cross-encoder, the ``none`` backend, and
``RemoteReranker`` in front of a rerank server (in-process) serving the tiny cross-encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reranking.backends import make_reranker
from reranking.reranker import NoneReranker, RankedHit, Reranker
from reranking.settings import RerankSettings

QUERY = "what is the capital of France?"
DOCS = ["Paris is the capital of France.", "", "Bananas are yellow.", "巴黎是法国的首都。", "Paris " * 30]


@pytest.fixture(scope="module")
def remote_reranker(cross_encoder_reranker: Reranker) -> Iterator[Reranker]:
    from fastapi.testclient import TestClient

    from api.rerank_server import create_rerank_app
    from reranking.backends.remote import RemoteReranker

    with TestClient(create_rerank_app(reranker=cross_encoder_reranker)) as server:
        yield RemoteReranker("http://testserver", client=server)


@pytest.fixture(params=["qwen3_reranker", "cross_encoder_reranker", "none", "remote_reranker"])
def reranker(request: pytest.FixtureRequest) -> Reranker:
    if request.param == "none":
        return NoneReranker()
    return request.getfixturevalue(request.param)


class TestRerankerContract:
    def test_is_a_reranker(self, reranker: Reranker) -> None:
        assert isinstance(reranker, Reranker)
        assert isinstance(reranker.name, str) and reranker.name
        assert isinstance(reranker.reorders, bool)
        # what the API's /info and the gate's identity read: None where the backend has no budget or revision
        assert reranker.max_tokens is None or (
            isinstance(reranker.max_tokens, int) and reranker.max_tokens > 0
        )
        assert reranker.revision is None or isinstance(reranker.revision, str)

    def test_warm_up_is_idempotent(self, reranker: Reranker) -> None:
        before = reranker.rank(QUERY, DOCS)
        reranker.warm_up()
        reranker.warm_up()
        assert reranker.rank(QUERY, DOCS) == before

    def test_hits_are_sorted_and_a_permutation(self, reranker: Reranker) -> None:
        hits = reranker.rank(QUERY, DOCS)
        assert all(isinstance(h, RankedHit) for h in hits)
        assert sorted(h.index for h in hits) == list(range(len(DOCS)))
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(isinstance(h.score, float) and 0.0 <= h.score <= 1.0 for h in hits)

    @pytest.mark.parametrize("top_k", [0, 1, 3, 10])
    def test_top_k(self, reranker: Reranker, top_k: int) -> None:
        full = reranker.rank(QUERY, DOCS)
        assert reranker.rank(QUERY, DOCS, top_k=top_k) == full[:top_k]

    def test_empty_documents(self, reranker: Reranker) -> None:
        assert reranker.rank(QUERY, []) == []
        assert reranker.rank(QUERY, [], top_k=3) == []

    def test_deterministic(self, reranker: Reranker) -> None:
        assert reranker.rank(QUERY, DOCS) == reranker.rank(QUERY, DOCS)

    def test_accepts_an_instruction(self, reranker: Reranker) -> None:
        hits = reranker.rank(QUERY, DOCS, instruction="Find passages that name a capital city")
        assert sorted(h.index for h in hits) == list(range(len(DOCS)))

    def test_reordering_backends_score_each_document(self, reranker: Reranker) -> None:
        if not reranker.reorders:
            pytest.skip("the none backend keeps stage-1 order by design")
        hits = reranker.rank(QUERY, DOCS)
        assert len({round(h.score, 6) for h in hits}) > 1
        # A document's score does not depend on its position in the list.
        by_index = {h.index: h.score for h in hits}
        reversed_hits = reranker.rank(QUERY, DOCS[::-1])
        for h in reversed_hits:
            assert abs(h.score - by_index[len(DOCS) - 1 - h.index]) < 1e-5


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
    remote_reranker: Reranker, cross_encoder_reranker: Reranker
) -> None:
    assert remote_reranker.rank(QUERY, DOCS, top_k=3) == cross_encoder_reranker.rank(QUERY, DOCS, top_k=3)
