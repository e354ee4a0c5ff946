"""Upload -> Celery worker -> parse -> chunk -> embed -> Milvus -> search, on the real embedded stack."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from api.cli.client import SieveClient, SieveClientError
from api.cli.stack import Stack
from ingestion.backends.local_blobs import LocalBlobStore
from ingestion.blobs import document_prefix
from retrieval import RetrievalSettings
from retrieval.milvus_store import MilvusStore
from tests.integration import files

pytestmark = pytest.mark.integration

VOLCANO = (
    "Basaltic lava from shield volcanoes in Hawaii flows for kilometres because its low silica "
    "content keeps it runny. Eruptions there are rarely explosive."
)
CHEESE = (
    "Cheddar cheese is aged in caves for up to two years; the rind forms as moisture leaves the "
    "curd and mould cultures ripen the wheel."
)
ORBIT = (
    "A geostationary satellite orbits Earth once per sidereal day at about 35,786 kilometres above the "
    "equator, so it appears fixed in the sky to ground antennas."
)
BEES = (
    "Honey bees communicate the direction and distance of flowers to their hive mates with the "
    "waggle dance, a figure-eight movement on the comb."
)
TIDES = (
    "Ocean tides are raised mainly by the Moon's gravity; spring tides happen when the Sun and Moon "
    "line up at new and full moon."
)


def store(stack: Stack) -> MilvusStore:
    return MilvusStore(RetrievalSettings(milvus_uri=stack.milvus_uri, collection="it_chunks"))


def wait_done(client: SieveClient, response: dict) -> list[dict]:
    jobs = client.wait([j["job_id"] for j in response["jobs"]], timeout=180)
    return jobs


def top_document(client: SieveClient, query: str) -> str:
    return client.search(query, top_k=3)["hits"][0]["document_id"]


def test_each_format_is_found_by_a_query(client_a: SieveClient, tmp_path: Path) -> None:
    paths = [
        files.pdf(tmp_path / "report.pdf", ["An introduction page about nothing in particular.", VOLCANO]),
        files.docx(tmp_path / "dairy.docx", ["Notes from the farm.", CHEESE]),
        files.html(tmp_path / "space.html", "Satellites", ORBIT),
        files.markdown(tmp_path / "insects.md", "Bees", BEES),
    ]
    response = client_a.upload(paths, metadata={"source": "it"})
    assert response["rejected"] == []
    jobs = wait_done(client_a, response)
    assert [j["state"] for j in jobs] == ["done"] * 4, jobs
    assert all(j["chunks_total"] >= 1 and j["chunks_done"] == j["chunks_total"] for j in jobs)

    assert top_document(client_a, "why is Hawaiian lava so fluid") == "report.pdf"
    assert top_document(client_a, "how is cheddar ripened") == "dairy.docx"
    assert top_document(client_a, "satellite that stays above one spot on the equator") == "space.html"
    assert top_document(client_a, "how do bees tell others where flowers are") == "insects.md"

    hit = client_a.search("why is Hawaiian lava so fluid", top_k=1)["hits"][0]
    assert hit["page"] == 2
    assert hit["metadata"]["source"] == "it" and hit["metadata"]["filename"] == "report.pdf"
    assert "tracking" not in client_a.search("tracking do not index me", top_k=5)["hits"][0]["text"]
    result = client_a.search("bees", top_k=2, filters={"document_id": "space.html"})
    assert {h["document_id"] for h in result["hits"]} == {"space.html"}
    assert result["rerank"] == {"backend": "none", "applied": False, "note": result["rerank"]["note"]}
    assert set(result["timings_ms"]) >= {"embed", "stage1", "rerank", "total"}


def test_bad_files_fail_alone(client_a: SieveClient, tmp_path: Path) -> None:
    good = files.markdown(tmp_path / "tides.md", "Tides", TIDES)
    unsupported = tmp_path / "tool.exe"
    unsupported.write_bytes(b"MZ\x90\x00" * 64)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    response = client_a.upload([good, unsupported, broken])
    assert [r["filename"] for r in response["rejected"]] == ["tool.exe"]
    assert ".exe" in response["rejected"][0]["error"]
    jobs = {j["filename"]: j for j in wait_done(client_a, response)}
    assert jobs["tides.md"]["state"] == "done"
    assert jobs["broken.pdf"]["state"] == "failed"
    assert "broken.pdf" in jobs["broken.pdf"]["error"]
    assert top_document(client_a, "what causes spring tides") == "tides.md"

    with pytest.raises(SieveClientError) as refused:
        client_a.upload([unsupported])
    assert refused.value.status == 415


def test_reingesting_five_times_leaves_one_copy(client_a: SieveClient, stack: Stack, tmp_path: Path) -> None:
    path = files.markdown(tmp_path / "again.md", "Again", BEES + " " + TIDES)
    for _ in range(5):
        wait_done(client_a, client_a.upload([path], document_id="again"))
    doc = client_a.document("again")
    assert doc["chunks"] >= 1
    assert store(stack).count("tenant-a", "again") == doc["chunks"]
    hits = client_a.search("waggle dance", top_k=10, filters={"document_id": "again"})["hits"]
    assert len({h["chunk_id"] for h in hits}) == len(hits) == doc["chunks"]


def test_new_version_replaces_old_without_a_gap(client_a: SieveClient, stack: Stack, tmp_path: Path) -> None:
    shared = "The lighthouse keeper's log records every ship that passed the northern cape. "
    v1 = files.markdown(tmp_path / "log-v1.md", "Log", shared + CHEESE)
    v2 = files.markdown(tmp_path / "log-v2.md", "Log", shared + ORBIT)
    wait_done(client_a, client_a.upload([v1], document_id="log"))
    first = client_a.document("log")["version"]

    seen: list[set[str]] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = SieveClient(stack.api_url, "key-a")
        while not stop.is_set():
            hits = watcher.search("lighthouse keeper log of ships", top_k=10, filters={"document_id": "log"})[
                "hits"
            ]
            seen.append({h["version"] for h in hits})
        watcher.close()

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        wait_done(client_a, client_a.upload([v2], document_id="log"))
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    second = client_a.document("log")["version"]
    assert first != second
    assert seen and all(len(versions) == 1 for versions in seen), "a search saw both versions or neither"
    assert seen[-1] == {second}
    assert store(stack).count("tenant-a", "log") == client_a.document("log")["chunks"]
    assert all(
        h["version"] == second
        for h in client_a.search("cheddar", top_k=20)["hits"]
        if h["document_id"] == "log"
    )


def test_delete_removes_every_chunk_and_the_stored_file(
    client_a: SieveClient, stack: Stack, tmp_path: Path
) -> None:
    path = files.markdown(tmp_path / "gone.md", "Gone", "Zeppelins were rigid airships filled with hydrogen.")
    wait_done(client_a, client_a.upload([path], document_id="gone"))
    stored = LocalBlobStore(stack.home / "files")  # the embedded stack's INGEST_DATA_DIR
    assert len(stored.list(document_prefix("tenant-a", "gone"))) == 1
    assert top_document(client_a, "rigid airship hydrogen") == "gone"
    job = client_a.delete("gone")
    assert all(h["document_id"] != "gone" for h in client_a.search("rigid airship hydrogen")["hits"])
    assert client_a.wait([job["job_id"]])[0]["state"] == "done"
    assert store(stack).count("tenant-a", "gone") == 0
    assert stored.list(document_prefix("tenant-a", "gone")) == []
    with pytest.raises(SieveClientError) as missing:
        client_a.document("gone")
    assert missing.value.status == 404


def test_tenants_are_isolated(client_a: SieveClient, client_b: SieveClient, tmp_path: Path) -> None:
    secret = files.markdown(
        tmp_path / "secret.md", "Secret", "The vault combination is kept by the quartermaster."
    )
    response = client_a.upload([secret], document_id="secret")
    wait_done(client_a, response)
    assert top_document(client_a, "vault combination quartermaster") == "secret"
    assert all(
        h["document_id"] != "secret" for h in client_b.search("vault combination quartermaster")["hits"]
    )
    for call in (
        lambda: client_b.document("secret"),
        lambda: client_b.job(response["jobs"][0]["job_id"]),
        lambda: client_b.delete("secret"),
    ):
        with pytest.raises(SieveClientError) as err:
            call()
        assert err.value.status == 404


def test_requests_without_a_valid_key_are_refused(stack: Stack) -> None:
    for key in ("", "wrong"):
        with pytest.raises(SieveClientError) as err:
            SieveClient(stack.api_url, key).search("anything")
        assert err.value.status == 401


def test_killed_worker_job_still_completes_once(client_a: SieveClient, stack: Stack, tmp_path: Path) -> None:
    paragraphs = [
        f"Paragraph {i} of the long survey describes coral reef number {i} and its fish. " * 6
        for i in range(160)
    ]
    path = files.markdown(tmp_path / "survey.md", "Reef survey", "\n\n".join(paragraphs))
    job_id = client_a.upload([path], document_id="survey")["jobs"][0]["job_id"]
    deadline = time.monotonic() + 120
    while (job := client_a.job(job_id))["chunks_done"] == 0 or job["state"] != "running":
        assert job["state"] not in ("done", "failed"), "job ended before the worker could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (worker,) = [p for name, p in stack.procs if name == "worker"]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    stack.procs.remove(("worker", worker))
    stack.start_worker()
    (job,) = client_a.wait([job_id], timeout=240)
    assert job["state"] == "done", job
    assert job["attempts"] == 2  # the killed run and the redelivered one
    assert int(job["chunks_total"]) > 32
    assert store(stack).count("tenant-a", "survey") == job["chunks_total"]
    assert client_a.document("survey")["chunks"] == job["chunks_total"]
