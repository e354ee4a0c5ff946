"""Uploads of one document, version and file name written at once each land whole (no shared temp file)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ingestion.files import FileStore


def test_concurrent_saves_of_the_same_file_all_succeed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = b"the same bytes " * 50_000

    def save(_: int) -> Path:
        return store.save("t", "doc", "v1", "same.txt", data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(save, range(32)))

    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == data
    assert not list(paths[0].parent.glob("*.part"))
