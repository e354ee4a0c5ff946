"""Hard-negative mining from BM25 and from hybrid (RRF) rankings: ``api.relevance.mining``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from api.relevance.mining import bm25_scores, mining_scores, rrf_scores
from api.relevance.training_data import mine_negatives

PASSAGES = [
    "Vaccines train the immune system to recognise a virus.",
    "The vaccine was stored in a cold room.",
    "Photosynthesis turns light into sugar in the leaves.",
    "Cats sleep for most of the day.",
]


def test_bm25_matches_a_hand_computed_score() -> None:
    scores = bm25_scores(["photosynthesis"], PASSAGES)
    # Terms after stop words and stemming: 6, 4, 5 and 4 ("into", "in", "the" go from the third passage).
    avgdl = (6 + 4 + 5 + 4) / 4
    idf = math.log(1 + (4 - 1 + 0.5) / (1 + 0.5))
    expected = idf * 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * 5 / avgdl))
    assert scores.shape == (1, 4)
    assert scores[0, 2] == pytest.approx(expected, rel=1e-5)
    assert scores[0, [0, 1, 3]].tolist() == [0.0, 0.0, 0.0]


def test_bm25_uses_the_lexical_legs_analysis() -> None:
    # "vaccines" and "vaccine" share a Snowball stem; "the" is a stop word and matches nothing.
    scores = bm25_scores(["the vaccines"], PASSAGES)
    assert scores[0, 0] > 0 and scores[0, 1] > 0
    assert scores[0, 2] == 0 and scores[0, 3] == 0


def test_rrf_sums_reciprocal_ranks_and_skips_unmatched_bm25_passages() -> None:
    dense = np.array([[0.9, 0.1, 0.5]])
    bm25 = np.array([[0.0, 3.0, 1.0]])
    fused = rrf_scores(dense, bm25, k=10, matched_only=(False, True))
    assert fused[0].tolist() == pytest.approx([1 / 11, 1 / 13 + 1 / 11, 1 / 12 + 1 / 12])
    # Without the flag the zero-scored passage would take BM25's last rank.
    assert rrf_scores(dense, bm25, k=10)[0, 0] == pytest.approx(1 / 11 + 1 / 13)


def test_rrf_rejects_mismatched_legs() -> None:
    with pytest.raises(ValueError, match="shape"):
        rrf_scores(np.zeros((1, 2)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="one flag per leg"):
        rrf_scores(np.zeros((1, 2)), matched_only=(True, False))


IDS = ["p0", "p1", "p2", "p3"]
QUERY = ["vaccines immune system"]


def _mined(miner: str, dense: np.ndarray) -> list[str]:
    ranking = mining_scores(miner, dense, QUERY, PASSAGES)
    [negatives] = mine_negatives(ranking, IDS, [{"p0"}], 1, near_ties=dense)
    return negatives


def test_hybrid_and_bm25_mining_pick_what_the_lexical_leg_ranks_high() -> None:
    # p0 answers. The dense model likes the cats passage (a blind spot BM25 does not share); BM25 likes the
    # cold-room passage (it says "vaccine"), and so does hybrid search, which ranks it second.
    dense = np.array([[0.95, 0.70, 0.10, 0.80]], dtype=np.float32)
    assert _mined("dense", dense) == ["p3"]
    assert _mined("bm25", dense) == ["p1"]
    assert _mined("hybrid", dense) == ["p1"]


def test_near_ties_are_judged_on_the_dense_cosine_whatever_the_ranking() -> None:
    # p1 is now almost as close to the query as the positive: likely an unlabelled positive, so it is
    # skipped although hybrid search ranks it second; the next candidate in hybrid order is taken.
    dense = np.array([[0.95, 0.93, 0.10, 0.80]], dtype=np.float32)
    assert _mined("hybrid", dense) == ["p3"]
    with pytest.raises(ValueError, match="near_ties"):
        mine_negatives(dense, IDS, [{"p0"}], 1, near_ties=np.zeros((2, 4)))


def test_an_unknown_miner_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown miner"):
        mining_scores("random", np.zeros((1, 4)), ["q"], PASSAGES)


def test_the_cli_refuses_an_unknown_miner_before_training(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"query": "q", "passage": "p", "label": 1}\n')
    out = tmp_path / "models"
    args = ["train", "embedder", "--data", str(data), "--out", str(out), "--mine-with", "random"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "--mine-with 'random'" in result.output and "hybrid" in result.output
    assert not out.exists()
