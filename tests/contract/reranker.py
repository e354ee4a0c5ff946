"""The behaviour every ``Reranker`` shows, run against each implementation.

Subclass ``RerankerContract`` in a ``test_*.py`` module and supply a ``reranker`` fixture: the fast tier runs
it on the tiny models, the ``none`` backend, ``RemoteReranker`` in front of an in-process rerank server, the
engine adapter and the test fake (``tests.support.fakes.FakeReranker``), so the fake cannot drift.
Windows: ``DOCS`` fit every backend's budget, so ``windows=True`` must change no score and report each
document whole; long documents are each backend's own tests (their budgets differ).
"""

from __future__ import annotations

import pytest

from reranking.reranker import RankedHit, Reranker, Window

QUERY = "what is the capital of France?"
DOCS = ["Paris is the capital of France.", "", "Bananas are yellow.", "巴黎是法国的首都。", "Paris " * 30]


class RerankerContract:
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

    def test_no_window_unless_asked(self, reranker: Reranker) -> None:
        assert all(h.window is None for h in reranker.rank(QUERY, DOCS))

    def test_documents_that_fit_are_one_whole_window(self, reranker: Reranker) -> None:
        plain = {h.index: h.score for h in reranker.rank(QUERY, DOCS)}
        windowed = reranker.rank(QUERY, DOCS, windows=True)
        assert sorted(h.index for h in windowed) == list(range(len(DOCS)))
        assert all(abs(h.score - plain[h.index]) < 1e-6 for h in windowed)
        assert all(h.window == Window(0, 1, 0, len(DOCS[h.index])) for h in windowed)
        assert reranker.rank(QUERY, DOCS, top_k=2, windows=True) == windowed[:2]
