"""The search cache on the real embedded stack: the Celery worker's ingest and delete jobs move the tenant's
index version, so a repeated search never returns what was true before."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli.client import SieveClient
from tests.integration import files

pytestmark = pytest.mark.integration


def test_a_cached_search_never_outlives_an_ingest_or_a_delete(
    client_a: SieveClient, client_b: SieveClient, tmp_path: Path
) -> None:
    query = "how do narwhals use their tusks"
    before = client_a.search(query, top_k=5)
    assert client_a.search(query, top_k=5)["cached"] is True
    assert client_b.search(query, top_k=5)["cached"] is False  # another tenant: its own entry

    path = files.markdown(
        tmp_path / "narwhal.md", "Narwhals", "Narwhals use their long tusks to sense the water."
    )
    job = client_a.upload([path], document_id="narwhal-cache")["jobs"][0]
    assert client_a.wait([job["job_id"]])[0]["state"] == "done"
    after = client_a.search(query, top_k=5)
    assert after["cached"] is False and after["hits"][0]["document_id"] == "narwhal-cache"
    assert after["hits"] != before["hits"]
    assert client_a.search(query, top_k=5)["cached"] is True

    client_a.delete("narwhal-cache")  # hidden at once: the cached answer naming it is never served
    gone = client_a.search(query, top_k=5)
    assert gone["cached"] is False and all(h["document_id"] != "narwhal-cache" for h in gone["hits"])
    assert all(h["document_id"] != "narwhal-cache" for h in client_b.search(query, top_k=5)["hits"])
