"""The behaviour every ``ReviewSink`` shows, run against each implementation.

Subclass ``ReviewSinkContract`` in a ``test_*.py`` module with a ``sink`` fixture yielding an empty sink.
"""

from __future__ import annotations

import time

import pytest

from api.review import ReviewCandidate, ReviewItem, ReviewLabelError, ReviewNotFoundError, ReviewSink


def item(tenant: str = "t1", query: str = "what is x", n: int = 3) -> ReviewItem:
    return ReviewItem(
        tenant=tenant,
        query=query,
        candidates=[
            ReviewCandidate(
                chunk_id=f"{query}#{i}",
                document_id=f"doc-{i}",
                text=f"passage {i} ü",
                score=0.2 - i / 100,
                stage1_score=0.5,
                rerank_score=0.2 - i / 100,
            )
            for i in range(n)
        ],
        backend="qwen3-reranker",
        best=0.2,
        spread=(n - 1) / 100,
        rule=(0.4, 0.1),
        embedder="emb",
        reranker="qwen3-reranker:m",
    )


class ReviewSinkContract:
    def test_an_added_item_comes_back_whole_and_pending(self, sink: ReviewSink) -> None:
        flagged = item(query='say "hi" \\ 日本')
        got = sink.get(sink.add(flagged))
        assert got.model_dump(exclude={"id"}) == flagged.model_dump(exclude={"id"})
        assert got.id and got.state == "pending" and got.label is None

    def test_ids_follow_the_order_items_were_added(self, sink: ReviewSink) -> None:
        ids = [sink.add(item(query=f"q{i}")) for i in range(5)]
        assert [i.id for i in sink.page().items] == ids
        assert [i.query for i in sink.page().items] == [f"q{i}" for i in range(5)]

    def test_pages_with_a_cursor_cover_everything_once(self, sink: ReviewSink) -> None:
        ids = [sink.add(item(query=f"q{i}")) for i in range(7)]
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = sink.page(limit=3, cursor=cursor)
            seen += [i.id for i in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == ids

    def test_filters_tenant_state_and_since(self, sink: ReviewSink) -> None:
        a = sink.add(item("t1", "a"))
        b = sink.add(item("t2", "b"))
        time.sleep(0.01)
        middle = time.time()
        time.sleep(0.01)
        c = sink.add(item("t1", "c"))
        sink.label(c, ["c#0"], by="t1")
        assert [i.id for i in sink.page(tenant="t1").items] == [a, c]
        assert [i.id for i in sink.page(tenant="t2").items] == [b]
        assert [i.id for i in sink.page(state="labelled").items] == [c]
        assert [i.id for i in sink.page(state="pending", tenant="t1").items] == [a]
        assert [i.id for i in sink.page(since=middle).items] == [c]
        assert sink.page(tenant="nobody").items == [] and sink.page(tenant="nobody").next_cursor is None

    def test_a_label_is_kept_and_replaced(self, sink: ReviewSink) -> None:
        item_id = sink.add(item())
        labelled = sink.label(item_id, ["what is x#1", "what is x#1"], by="t1")
        assert labelled.state == "labelled" and labelled.label and labelled.label.positives == ["what is x#1"]
        assert sink.get(item_id).label == labelled.label
        relabelled = sink.label(item_id, [], by="admin")  # none of them answers
        got = sink.get(item_id)
        assert got.label == relabelled.label and got.label and got.label.positives == []
        assert got.label.labelled_by == "admin"

    def test_a_label_naming_a_passage_the_item_lacks_is_refused(self, sink: ReviewSink) -> None:
        item_id = sink.add(item())
        with pytest.raises(ReviewLabelError, match="nope"):
            sink.label(item_id, ["what is x#0", "nope"], by="t1")
        assert sink.get(item_id).label is None

    @pytest.mark.parametrize(
        "bad", ["9999999999999-0", "not-an-id", "", "1-2-3", "99999999999999999999999-0", "１-0"]
    )
    def test_unknown_ids_are_not_found(self, sink: ReviewSink, bad: str) -> None:
        sink.add(item())
        with pytest.raises(ReviewNotFoundError):
            sink.get(bad)
        with pytest.raises(ReviewNotFoundError):
            sink.label(bad, [], by="t1")

    def test_a_bad_cursor_is_refused(self, sink: ReviewSink) -> None:
        with pytest.raises(ReviewLabelError):
            sink.page(cursor="garbage")
        with pytest.raises(ReviewLabelError):
            sink.page(cursor="99999999999999999999999-0")
        assert sink.page(cursor=f"{2**64 - 1}-{2**64 - 1}").items == []

    def test_claims_hand_each_unlabelled_item_to_one_reviewer(self, sink: ReviewSink) -> None:
        ids = [sink.add(item(query=f"q{i}")) for i in range(5)]
        sink.label(ids[0], [], by="admin")
        first = [i.id for i in sink.claim("ann", count=2)]
        second = [i.id for i in sink.claim("bob", count=10)]
        assert first == ids[1:3] and second == ids[3:]
        assert sink.claim("cid", count=10) == []  # everything is held
        sink.label(ids[1], ["q1#0"], by="admin")
        again = [i.id for i in sink.claim("dan", count=10, idle_s=0)]  # held too long: handed out again
        assert again == [ids[2], *ids[3:]]
