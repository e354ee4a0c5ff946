"""The body cap behind a real uvicorn: a chunked body far over API_MAX_JSON_BYTES is answered 413 and the
connection dropped, so the client is stopped long before it has sent it all; the API keeps answering."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.cli.stack import free_port
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH

pytestmark = pytest.mark.integration

CAP = 1 << 20
CHUNK = 64 * 1024
TOTAL = 256 * 1024 * 1024


@pytest.fixture
def api_url(tmp_path: Path) -> Iterator[str]:
    settings = harness.settings(IngestSettings(data_dir=tmp_path / "files"), max_json_bytes=CAP)
    app = create_app(settings, resources_factory=harness.resources_factory(None))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_chunked_body_is_cut_off_at_the_cap(api_url: str) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"query": "'
        while sent < TOTAL:
            sent += CHUNK
            yield b"a" * CHUNK
        yield b'"}'

    try:
        r = httpx.post(
            f"{api_url}/v1/search",
            content=body(),
            headers={**AUTH, "Content-Type": "application/json"},
            timeout=60,
        )
    except httpx.TransportError:  # the server dropped the connection while the client was still writing
        r = None
    if r is not None:
        assert r.status_code == 413 and "API_MAX_JSON_BYTES" in r.json()["error"]["message"]
    assert sent < TOTAL // 4  # stopped near the cap (socket buffers hold a few MiB), not at 256 MiB
    assert httpx.get(f"{api_url}/health", timeout=10).status_code == 200
    ok = httpx.post(f"{api_url}/v1/search", json={"query": "bees"}, headers=AUTH, timeout=10)
    assert ok.status_code == 200, ok.text
