from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from ingestion.records import Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, RecordingSender


@pytest.fixture
def records() -> Iterator[Records]:
    r = Records("redis://fake", client=fakeredis.FakeRedis(decode_responses=True))
    yield r
    r.close()


@pytest.fixture
def ingest_settings(tmp_path: Path) -> IngestSettings:
    """Small chunks; documents parsed in the test process (a sandboxed parse is a child process, ~0.3 s
    each here: the sandbox has its own tests, test_sandbox.py, and the integration tier's workers use it)."""
    return IngestSettings(
        data_dir=tmp_path / "files", chunk_tokens=16, chunk_overlap=4, embed_batch=4, parse_sandbox=False
    )


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def uploads(ingest_settings: IngestSettings, records: Records, sender: RecordingSender) -> Uploads:
    return Uploads(ingest_settings, records, sender)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()
