"""``sieve review clusters``: the table of clusters it prints."""

from __future__ import annotations

import re

from rich.console import Console

from api.cli.review import clusters_table
from api.relevance.review_clusters import cluster_items
from tests.unit.api.relevance.test_review_clusters import MIXED, NOISE, PASSWORD, REFUND, embed, queue


def test_cli_table_shows_size_and_typical_queries() -> None:
    result = cluster_items(queue(MIXED), embed)
    console = Console(width=200, record=True)
    console.print(clusters_table(result.model_dump()))
    text = console.export_text()
    assert re.search(r"│ 1\s+│ 4\s+│", text) and "unclustered" in text
    assert all(q in text for q in PASSWORD + REFUND + NOISE)
