"""Browser tests: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``; Playwright's own
browser download cannot run offline, so it is never used) against a real embedded stack: Redis, a Milvus Lite
server, a Celery worker and the API, with keys for two tenants and the admin.

Screenshots go to ``tests/browser/artifacts/`` (git-ignored), or to ``$SIEVE_BROWSER_ARTIFACTS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli.stack import Stack, free_port

CHROMIUM = Path(os.environ.get("SIEVE_CHROMIUM", "/usr/bin/chromium"))
HERE = Path(__file__).resolve().parent
ARTIFACTS = Path(os.environ.get("SIEVE_BROWSER_ARTIFACTS", HERE / "artifacts"))
KEYS = {"web-key-a": "tenant-a", "web-key-b": "tenant-b"}
ADMIN_KEY = "web-admin-key"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


# Package scope: Playwright's sync API runs an event loop in the main thread until it stops; it must stop
# with the browser tests, or every later test that calls asyncio.run() fails.
@pytest.fixture(scope="package")
def playwright_api() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run them"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing (pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(playwright_api: object) -> Iterator[object]:
    chromium = playwright_api.chromium  # type: ignore[attr-defined] # playwright is an optional test dependency
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    found = chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
    yield found
    found.close()


@pytest.fixture(scope="package")
def web_stack(playwright_api: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default product (no rerank stage configured), served on free ports."""
    stack = Stack(
        home=tmp_path_factory.mktemp("web-stack"),
        redis_port=free_port(),
        milvus_port=free_port(),
        api_port=free_port(),
        extra_env={
            "API_KEYS": json.dumps(KEYS),
            "API_ADMIN_KEY": ADMIN_KEY,
            "API_RATE_LIMIT_PER_S": "0",  # the page polls jobs every second
            "API_RERANK_GATE": "always",  # stage 2 as soon as a reranker is loaded (the screenshot test)
            "INGEST_CHUNK_TOKENS": "96",
            "INGEST_EMBED_BATCH": "4",  # progress in steps of 4 passages, as a big file's would show
            "RETRIEVAL_COLLECTION": "web_chunks",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
