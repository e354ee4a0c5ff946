"""Labelled data for ``sieve train``: formats, the split by query, mining, versioned folders, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from api.relevance.beir import query_split
from api.relevance.train_eval import pool_ids, rank_metrics
from api.relevance.training_data import (
    MANIFEST,
    TrainingDataError,
    load_labelled,
    mine_negatives,
    new_version_dir,
    split_by_query,
    unfinished_dir,
    weights_revision,
    write_manifest,
)
from api.review import Label, ReviewCandidate, ReviewItem
from tests.support.tiny_beir import QUERIES, write_tiny_beir


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _review_item(query: str, positives: list[str] | None) -> dict:
    candidates = [
        ReviewCandidate(
            chunk_id=f"c{i}", document_id="d", text=f"{query} passage {i}", score=0.1, stage1_score=0.1
        )
        for i in range(3)
    ]
    label = None if positives is None else Label(positives=positives, labelled_by="me")
    item = ReviewItem(
        id="1-0",
        tenant="t",
        query=query,
        candidates=candidates,
        backend="none",
        best=0.1,
        spread=0.0,
        rule=(0.3, 0.2),
        embedder="e",
        reranker="r",
        label=label,
    )
    return item.model_dump(mode="json")


def test_plain_jsonl_keeps_positives_and_labelled_negatives(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"query": "q one", "passage": "p1", "label": 1},
            {"query": "q one", "passage": "p2", "label": 0},
            {"query": "q two", "passage": "p3", "label": True},
        ],
    )
    data = load_labelled(path)
    qid = next(q for q, text in data.queries.items() if text == "q one")
    assert [data.passages[p] for p in data.positives(qid)] == ["p1"]
    assert [data.passages[p] for p in data.negatives(qid)] == ["p2"]
    assert len(data.queries) == 2 and len(data.digest) == 16


def test_review_export_uses_labelled_items_only(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "export.jsonl",
        [_review_item("labelled query", ["c1"]), _review_item("pending query", None)],
    )
    data = load_labelled(path)
    assert list(data.queries.values()) == ["labelled query"]
    [qid] = data.queries
    assert [data.passages[p] for p in data.positives(qid)] == ["labelled query passage 1"]
    assert len(data.negatives(qid)) == 2


def test_beir_folder_uses_the_train_split_only(tmp_path: Path) -> None:
    data = load_labelled(write_tiny_beir(tmp_path / "tiny"))
    judged = {"q1", "q2", "q3", "q4"}
    assert set(data.queries) == {q for q in judged if query_split(q) == "train"}
    assert set(data.queries) and not any(query_split(q) == "eval" for q in data.queries)
    assert len(data.passages) == 6 and data.passages["d1"].startswith("Photosynthesis")
    assert "q5" not in data.queries and set(QUERIES) > set(data.queries)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no labelled examples"),
        ([{"query": "q", "passage": "p", "label": 0}], "no positive"),
        ([{"question": "q", "answer": "p"}], "unknown format"),
        ([{"query": "q", "passage": "p", "label": "yes"}], "label must be"),
    ],
)
def test_unusable_data_fails_with_a_message(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(TrainingDataError, match=message):
        load_labelled(_write_jsonl(tmp_path / "data.jsonl", rows))


def test_unknown_paths_fail_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("q,p,1\n")
    with pytest.raises(ValueError, match="unknown data format"):
        load_labelled(tmp_path / "data.csv")
    with pytest.raises(ValueError, match="does not exist"):
        load_labelled(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="no positive"):
        load_labelled(_write_jsonl(tmp_path / "export.jsonl", [_review_item("q", [])]))


def test_split_by_query_is_disjoint_deterministic_and_order_free(tmp_path: Path) -> None:
    rows = [
        {"query": f"query {i}", "passage": f"passage {i} {j}", "label": int(j == 0)}
        for i in range(50)
        for j in range(3)
    ]
    data = load_labelled(_write_jsonl(tmp_path / "a.jsonl", rows))
    train, held = split_by_query(data, 0.2, seed=3)
    assert len(held.queries) == 10 and len(train.queries) == 40
    assert not set(train.queries) & set(held.queries)
    shuffled = load_labelled(_write_jsonl(tmp_path / "b.jsonl", rows[::-1]))
    assert set(split_by_query(shuffled, 0.2, seed=3)[1].queries) == set(held.queries)
    assert set(split_by_query(data, 0.2, seed=4)[1].queries) != set(held.queries)
    assert split_by_query(data, 0.0)[1].queries == {}
    with pytest.raises(ValueError, match="held-out"):
        split_by_query(data, 1.0)


def test_mined_negatives_skip_positives_and_near_ties() -> None:
    ids = ["pos", "tie", "hard", "easy", "other"]
    scores = np.array([[0.90, 0.89, 0.70, 0.10, 0.05]])
    [negs] = mine_negatives(scores, ids, [{"pos"}], 2, margin=0.05)
    assert negs == ["hard", "easy"]
    [filled] = mine_negatives(np.array([[0.9, 0.9, 0.9, 0.9, 0.9]]), ids, [{"pos"}], 2, margin=0.05)
    assert len(filled) == 2 and "pos" not in filled


def test_pool_sample_keeps_the_judged_passages() -> None:
    passages = {f"p{i}": "x" for i in range(100)}
    ids = pool_ids(passages, ["p99", "p98"], 10, seed=1)
    assert {"p99", "p98"} <= set(ids) and 10 <= len(ids) <= 12
    assert pool_ids(passages, [], None) == list(passages)


def test_rank_metrics_match_hand_values() -> None:
    qrels = {"a": {"d1": 1, "d9": 0}, "b": {"d2": 1}}
    values = rank_metrics(qrels, {"a": ["d1", "d3"], "b": ["d3", "d2"]})
    assert values["MRR@10"] == pytest.approx((1 + 0.5) / 2)
    assert values["nDCG@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert values["R@10"] == 1.0


def test_versions_count_up_and_the_manifest_marks_a_run_finished(tmp_path: Path) -> None:
    first = new_version_dir(tmp_path, "embedder")
    assert first.name == "embedder-v1" and unfinished_dir(tmp_path, "embedder") == first
    (first / "model.safetensors").write_bytes(b"weights")
    (first / "checkpoints").mkdir()
    (first / "checkpoints" / "model.safetensors").write_bytes(b"other")
    manifest = write_manifest(first, "embedder", "base-model", {"data": {"source": "x"}})
    assert manifest["version"] == 1 and len(manifest["revision"]) == 12
    assert json.loads((first / MANIFEST).read_text())["revision"] == manifest["revision"]
    assert unfinished_dir(tmp_path, "embedder") is None
    assert new_version_dir(tmp_path, "embedder").name == "embedder-v2"
    assert new_version_dir(tmp_path, "reranker").name == "reranker-v1"
    (first / "checkpoints" / "model.safetensors").write_bytes(b"changed")
    assert weights_revision(first) == manifest["revision"]  # checkpoints are not the model
    (first / "model.safetensors").write_bytes(b"new weights")
    assert weights_revision(first) != manifest["revision"]
    with pytest.raises(ValueError, match="no weight files"):
        weights_revision(tmp_path / "reranker-v1")
