"""The windows every backend shares (``reranking.reranker``): where they start, and the reduction of window
scores to one hit per document with the window that won. Pure: no model."""

from __future__ import annotations

import pytest

from reranking.reranker import (
    WINDOW_OVERLAP,
    NoneReranker,
    RankedHit,
    Window,
    best_windows,
    window_starts,
)


@pytest.mark.parametrize(("length", "window"), [(10, 10), (11, 10), (100, 16), (1000, 128), (129, 128)])
def test_window_starts_cover_every_token_and_overlap(length: int, window: int) -> None:
    starts = window_starts(length, window)
    assert starts[0] == 0 and starts[-1] + min(window, length) == length
    covered = set()
    for s in starts:
        covered.update(range(s, min(s + window, length)))
    assert covered == set(range(length))
    for a, b in zip(starts, starts[1:], strict=False):
        assert 0 < b - a <= window - window // WINDOW_OVERLAP  # each overlaps the next


def test_best_window_wins_and_is_reported() -> None:
    spans = [[(0, 10), (8, 20), (18, 30)], [(0, 5)]]
    hits = best_windows([0.1, 0.7, 0.3, 0.5], spans, report=True)
    assert hits == [RankedHit(0, 0.7, Window(1, 3, 8, 20)), RankedHit(1, 0.5, Window(0, 1, 0, 5))]


def test_first_of_equal_windows_wins_and_ties_between_documents_go_by_index() -> None:
    spans = [[(0, 4)], [(0, 3), (2, 6)]]
    hits = best_windows([0.4, 0.4, 0.4], spans, report=True)
    assert [(h.index, h.window) for h in hits] == [(0, Window(0, 1, 0, 4)), (1, Window(0, 2, 0, 3))]


def test_without_report_no_window_and_top_k_cuts() -> None:
    spans = [[(0, 1), (1, 2)], [(0, 1)], [(0, 1)]]
    hits = best_windows([0.2, 0.9, 0.5, 0.1], spans, top_k=2)
    assert hits == [RankedHit(0, 0.9), RankedHit(1, 0.5)]


def test_scores_must_match_the_windows() -> None:
    with pytest.raises(ValueError, match="3 window scores for 2 windows"):
        best_windows([0.1, 0.2, 0.3], [[(0, 1)], [(0, 1)]])


def test_none_backend_reports_whole_documents_only_when_asked() -> None:
    docs = ["abc", "", "de"]
    assert all(h.window is None for h in NoneReranker().rank("q", docs))
    windows = [h.window for h in NoneReranker().rank("q", docs, windows=True)]
    assert windows == [Window(0, 1, 0, 3), Window(0, 1, 0, 0), Window(0, 1, 0, 2)]
