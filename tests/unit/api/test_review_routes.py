"""The review routes: flagging from /v1/search, list and paginate, label, export, who sees what, errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.support.apikit import ADMIN, T1, T2, Harness, running

DOCS = {
    "bees": "Honey bees dance to show where the flowers grow.",
    "tides": "Tides follow the moon and the sun across the sea.",
    "lava": "Hawaiian lava is fluid because it holds little silica.",
}
UNSURE = [
    "how do glaciers carve valleys",
    "what is dark matter",
    "who built the pyramids",
    "why is the sky blue",
    "when did the ice age end",
]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with running(tmp_path) as h:
        for headers in (T1, T2):
            for name, text in DOCS.items():
                h.upload(headers, name, text)
        h.drain()
        h.reranker.unsure.update(UNSURE)
        yield h


def flag(h: Harness, headers: dict[str, str], query: str) -> str:
    h.search(headers, query, top_k=3)
    items = h.client.get("/v1/review", headers=headers, params={"limit": 500}).json()["items"]
    return str(next(i["id"] for i in reversed(items) if i["query"] == query))


def test_a_low_confidence_search_is_flagged_once_with_what_a_reviewer_needs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    before = REGISTRY.get_sample_value("sieve_low_confidence_total") or 0.0
    with caplog.at_level(logging.INFO, logger="api.low_confidence"):
        body = harness.search(T1, UNSURE[0], top_k=3)
        harness.search(T1, UNSURE[0], top_k=3)  # a cache hit: not flagged again
        harness.search(T1, "where do bees dance", top_k=3)  # a confident one: not flagged
    (item,) = harness.client.get("/v1/review", headers=T1).json()["items"]
    assert item["tenant"] == "t1" and item["query"] == UNSURE[0] and item["state"] == "pending"
    assert [c["chunk_id"] for c in item["candidates"]] == [h["chunk_id"] for h in body["hits"]]
    assert item["candidates"][0]["text"] == body["hits"][0]["text"]
    assert item["best"] == pytest.approx(0.2) and item["spread"] == pytest.approx(0.02)
    assert item["rule"] == [0.4, 0.1] and item["backend"] == "qwen3-reranker"
    assert item["reranker"] == "qwen3-reranker:scripted" and item["embedder"] == "test:hash-bow:64"
    assert item["created_at"] > 0
    assert REGISTRY.get_sample_value("sieve_low_confidence_total") == before + 1
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "review.flagged"]
    assert record.review_id == item["id"] and record.tenant == "t1" and record.query == UNSURE[0]  # type: ignore[attr-defined]
    assert record.best_score == pytest.approx(0.2)  # type: ignore[attr-defined]


def test_candidate_texts_are_cut_to_the_configured_length(tmp_path: Path) -> None:
    with running(tmp_path, review_text_chars=10) as h:
        h.upload(T1, "bees", DOCS["bees"])
        h.drain()
        h.reranker.unsure.add("q")
        h.search(T1, "q")
        (item,) = h.client.get("/v1/review", headers=T1).json()["items"]
    assert item["candidates"][0]["text"] == DOCS["bees"][:10]


def test_pages_follow_the_cursor(harness: Harness) -> None:
    for query in UNSURE:
        harness.search(T1, query)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = harness.client.get("/v1/review", headers=T1, params=params).json()
        assert len(page["items"]) <= 2
        seen += [i["query"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == UNSURE


def test_label_by_index_chunk_id_or_none_then_export_pairs(harness: Harness) -> None:
    a, b, c = (flag(harness, T1, q) for q in UNSURE[:3])
    item_a = harness.client.get(f"/v1/review/{a}", headers=T1).json()
    r = harness.client.post(f"/v1/review/{a}", json={"indices": [1]}, headers=T1)
    assert r.status_code == 200 and r.json()["state"] == "labelled"
    assert r.json()["label"]["positives"] == [item_a["candidates"][1]["chunk_id"]]
    item_b = harness.client.get(f"/v1/review/{b}", headers=T1).json()
    chosen = item_b["candidates"][0]["chunk_id"]
    assert harness.client.post(f"/v1/review/{b}", json={"chunk_ids": [chosen]}, headers=T1).status_code == 200
    assert (
        harness.client.post(f"/v1/review/{c}", json={"none": True}, headers=T1).json()["label"]["positives"]
        == []
    )
    labelled = harness.client.get("/v1/review", headers=T1, params={"state": "labelled"}).json()["items"]
    assert [i["id"] for i in labelled] == [a, b, c]
    assert harness.client.get("/v1/review", headers=T1, params={"state": "pending"}).json()["items"] == []

    r = harness.client.get("/v1/review/export", headers=T1)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    pairs = [json.loads(line) for line in r.text.splitlines()]
    assert all(set(p) == {"query", "passage", "label"} for p in pairs)
    assert len(pairs) == 9  # three items of three candidates
    positives = [(p["query"], p["passage"]) for p in pairs if p["label"] == 1]
    assert positives == [
        (UNSURE[0], item_a["candidates"][1]["text"]),
        (UNSURE[1], item_b["candidates"][0]["text"]),
    ]
    assert {p["label"] for p in pairs if p["query"] == UNSURE[2]} == {0}


def test_tenants_see_only_their_own_items_and_the_admin_sees_all(harness: Harness) -> None:
    mine = flag(harness, T1, UNSURE[0])
    theirs = flag(harness, T2, UNSURE[1])
    assert [i["id"] for i in harness.client.get("/v1/review", headers=T2).json()["items"]] == [theirs]
    assert harness.client.get(f"/v1/review/{mine}", headers=T2).status_code == 404
    assert harness.client.post(f"/v1/review/{mine}", json={"none": True}, headers=T2).status_code == 404
    assert harness.client.get(f"/v1/review/{mine}", headers=T1).json()["label"] is None  # untouched
    r = harness.client.get("/v1/review", headers=T2, params={"tenant": "t1"})
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
    assert harness.client.get("/v1/review/export", headers=T2, params={"tenant": "t1"}).status_code == 403
    assert harness.client.get("/v1/review", headers=T1, params={"tenant": "t1"}).status_code == 200

    everything = harness.client.get("/v1/review", headers=ADMIN).json()["items"]
    assert [i["id"] for i in everything] == [mine, theirs]
    only_t1 = harness.client.get("/v1/review", headers=ADMIN, params={"tenant": "t1"}).json()["items"]
    assert [i["id"] for i in only_t1] == [mine]
    labelled = harness.client.post(f"/v1/review/{theirs}", json={"indices": [0]}, headers=ADMIN).json()
    assert labelled["label"]["labelled_by"] == "admin"
    assert (
        harness.client.post(f"/v1/review/{mine}", json={"none": True}, headers=T1).json()["label"][
            "labelled_by"
        ]
        == "t1"
    )
    assert len(harness.client.get("/v1/review/export", headers=ADMIN).text.splitlines()) == 6
    assert len(harness.client.get("/v1/review/export", headers=T1).text.splitlines()) == 3


def test_admin_only_behaviours(harness: Harness) -> None:
    ids = [flag(harness, T1, q) for q in UNSURE[:3]]
    r = harness.client.post("/v1/review/claim", headers=T1, params={"reviewer": "ann"})
    assert r.status_code == 403 and "API_ADMIN_KEY" in r.json()["error"]["message"]
    claimed = harness.client.post("/v1/review/claim", headers=ADMIN, params={"reviewer": "ann", "count": 2})
    assert [i["id"] for i in claimed.json()] == ids[:2]
    rest = harness.client.post("/v1/review/claim", headers=ADMIN, params={"reviewer": "bob"}).json()
    assert [i["id"] for i in rest] == ids[2:]
    r = harness.client.post("/v1/search", json={"query": "x"}, headers=ADMIN)  # not a tenant: no search
    assert r.status_code == 403 and "tenant" in r.json()["error"]["message"]


def test_without_an_admin_key_configured_nobody_is_admin(tmp_path: Path) -> None:
    with running(tmp_path, admin_key="") as h:
        assert h.client.get("/v1/review", headers={"Authorization": "Bearer "}).status_code == 401
        assert h.client.get("/v1/review", headers=ADMIN).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("get", "/v1/review", {}, 401, "missing API key"),
        ("get", "/v1/review", {"headers": {"X-API-Key": "nope"}}, 401, "unknown API key"),
        ("get", "/v1/review/1-0", {"headers": T1}, 404, "1-0"),
        ("get", "/v1/review/garbage", {"headers": T1}, 404, "garbage"),
        ("post", "/v1/review/1-0", {"headers": T1, "json": {"none": True}}, 404, "1-0"),
        ("get", "/v1/review", {"headers": T1, "params": {"state": "done"}}, 422, "state"),
        ("get", "/v1/review", {"headers": T1, "params": {"limit": 0}}, 422, "limit"),
        ("get", "/v1/review", {"headers": T1, "params": {"cursor": "nope"}}, 422, "cursor"),
        ("post", "/v1/review/claim", {"headers": ADMIN}, 422, "reviewer"),
    ],
)
def test_errors(harness: Harness, method: str, path: str, kwargs: dict, status: int, fragment: str) -> None:
    r = getattr(harness.client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "exactly one"),
        ({"none": True, "indices": [0]}, "exactly one"),
        ({"chunk_ids": []}, "exactly one"),
        ({"indices": [-1]}, "indices"),
        ({"indices": [3]}, "outside"),
        ({"chunk_ids": ["not-a-candidate"]}, "not-a-candidate"),
    ],
)
def test_bad_labels_are_422(harness: Harness, body: dict, fragment: str) -> None:
    item_id = flag(harness, T1, UNSURE[0])
    r = harness.client.post(f"/v1/review/{item_id}", json=body, headers=T1)
    assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text
    assert harness.client.get(f"/v1/review/{item_id}", headers=T1).json()["state"] == "pending"


def test_a_review_queue_down_does_not_fail_the_search(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingestion.errors import RedisUnavailableError

    def down(*a: object) -> str:
        raise RedisUnavailableError("Redis is unreachable")

    monkeypatch.setattr(harness.res.review, "add", down)
    assert harness.search(T1, UNSURE[0])["hits"]
