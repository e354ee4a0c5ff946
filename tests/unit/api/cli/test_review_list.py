"""Issue 13 item 8: ``sieve review list`` merges repeated queries with a count and the last time seen;
``label`` and ``export`` reach their routes; ``search``'s query argument has help text."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import review as review_mod
from api.cli.main import app
from api.cli.review import merge_repeats


def _item(i: int, query: str, at: float, tenant: str = "t1", label: Any = None) -> dict[str, Any]:
    return {"id": f"r{i}", "tenant": tenant, "query": query, "created_at": at, "best": 0.1, "label": label}


ITEMS = [
    _item(1, "how do bees dance", 100.0),
    _item(2, "How do  bees dance", 300.0),
    _item(3, "tides", 200.0),
    _item(4, "how do bees dance", 200.0, label={"positives": []}),
    _item(5, "how do bees dance", 50.0, tenant="t2"),
]


def test_repeated_queries_merge_with_count_and_last_seen() -> None:
    rows = merge_repeats(ITEMS)
    first = rows[0]
    assert (first["tenant"], first["count"], first["pending"], first["last_seen"], first["latest_id"]) == (
        "t1",
        3,
        2,
        300.0,
        "r2",
    )
    assert [(r["tenant"], r["count"]) for r in rows[1:]] == [("t1", 1), ("t2", 1)]


class FakeApi:
    def __init__(self) -> None:
        self.labelled: list[tuple[str, dict[str, Any]]] = []

    def review_page(self, **params: Any) -> dict[str, Any]:
        if params.get("cursor") is None:
            return {"items": ITEMS[:3], "next_cursor": "c"}
        return {"items": ITEMS[3:], "next_cursor": None}

    def review_label(self, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.labelled.append((item_id, body))
        return {"id": item_id, "query": "q"}

    def review_export(self, **params: Any) -> str:
        return '{"query": "q", "passage": "p", "label": 1}\n'


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(review_mod, "client", lambda url, key: fake)
    return fake


def test_review_list_label_export(api: FakeApi) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    listed = runner.invoke(app, ["review", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "5 flagged searches, 3 distinct queries" in listed.output
    assert runner.invoke(app, ["review", "label", "r2", "-i", "0", "-i", "2"], env=env).exit_code == 0
    assert runner.invoke(app, ["review", "label", "r3", "--none"], env=env).exit_code == 0
    assert api.labelled == [("r2", {"indices": [0, 2]}), ("r3", {"none": True})]
    assert runner.invoke(app, ["review", "label", "r3"], env=env).exit_code == 2
    exported = runner.invoke(app, ["review", "export"], env=env)
    assert exported.exit_code == 0 and '"label": 1' in exported.output


def test_search_query_has_help() -> None:
    result = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    assert "What to look for" in result.output
