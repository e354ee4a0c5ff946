"""The real embedded stack for integration tests: the project's own Redis and Milvus Lite server on free
ports in a temporary folder, a real Celery worker process and the API served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli.client import SieveClient
from api.cli.stack import Stack, free_port

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import json

    home: Path = tmp_path_factory.mktemp("stack")
    stack = Stack(
        home=home,
        redis_port=free_port(),
        milvus_port=free_port(),
        api_port=free_port(),
        extra_env={
            "API_KEYS": json.dumps(KEYS),
            # Short enough that a job of a killed worker is redelivered within the test.
            "INGEST_VISIBILITY_TIMEOUT_S": "6",
            "INGEST_RESTORE_INTERVAL_S": "1",
            "INGEST_RETRY_BACKOFF_S": "1",
            "INGEST_CHUNK_TOKENS": "128",
            "RETRIEVAL_COLLECTION": "it_chunks",
            # Watcher threads search in a tight loop (cache hits take a millisecond): no rate limit here.
            "API_RATE_LIMIT_PER_S": "0",
            # Stage 2 whenever RERANK_BACKEND names one, without a stored rerank-gate decision.
            "API_RERANK_GATE": "always",
        },
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def client_a(stack: Stack) -> Iterator[SieveClient]:
    client = SieveClient(stack.api_url, "key-a")
    yield client
    client.close()


@pytest.fixture(scope="session")
def client_b(stack: Stack) -> Iterator[SieveClient]:
    client = SieveClient(stack.api_url, "key-b")
    yield client
    client.close()
