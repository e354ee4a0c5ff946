"""The blob-store contract on the local folder (the S3 store runs it on a real S3 server in
tests/integration/test_blob_s3.py), and what only the local folder promises: the layout the file store always
had, fsynced writes that leave no temp file, and nothing outside its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.backends import BLOB_STORES, make_blob_store
from ingestion.backends.local_blobs import LocalBlobStore
from ingestion.blobs import BlobStore, version_key
from ingestion.settings import IngestSettings
from tests.contract.blob_store import BlobStoreContract


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "files")


def test_the_default_store_is_the_local_folder_of_data_dir(tmp_path: Path) -> None:
    blobs = make_blob_store(IngestSettings(data_dir=tmp_path / "files"))
    assert isinstance(blobs, LocalBlobStore) and isinstance(blobs, BlobStore)
    assert blobs.root == tmp_path / "files"
    assert set(BLOB_STORES) == {"local", "s3"}


def test_blob_store_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_BLOB_STORE", "s3")
    monkeypatch.setenv("INGEST_S3_BUCKET", "uploads")
    monkeypatch.setenv("INGEST_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("INGEST_S3_SECRET_ACCESS_KEY", "s3cret")
    settings = IngestSettings()
    assert (settings.blob_store, settings.s3_bucket, settings.s3_endpoint_url) == (
        "s3",
        "uploads",
        "http://minio:9000",
    )
    assert "s3cret" not in repr(settings)  # a secret is not printed with the settings
    monkeypatch.setenv("INGEST_BLOB_STORE", "ftp")
    with pytest.raises(ValueError, match="blob_store"):
        IngestSettings()


def test_files_sit_where_the_file_store_always_put_them(tmp_path: Path) -> None:
    """Files stored before the blob store (``{data_dir}/{tenant}/{hash}/{version}/{name}``) are found."""
    import hashlib

    digest = hashlib.sha256(b"t1\x1fnotes.md").hexdigest()[:24]
    old = tmp_path / "t1" / digest / "0123456789abcdef" / "notes.md"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"# notes")
    blobs = LocalBlobStore(tmp_path)
    key = version_key("t1", "notes.md", "0123456789abcdef", "notes.md")
    with blobs.fetch(key) as path:
        assert path == old and path.read_bytes() == b"# notes"


def test_a_put_leaves_no_temp_file_and_a_failed_put_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = LocalBlobStore(tmp_path)
    blobs.put("a/b.txt", b"x" * 10_000)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("ingestion.backends.local_blobs.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        blobs.put("a/c.txt", b"y")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]
    with blobs.fetch("a/b.txt") as path:
        assert path.read_bytes() == b"x" * 10_000


def test_nothing_outside_the_root_is_read_or_removed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    blobs = LocalBlobStore(tmp_path / "files")
    hostile = version_key("..", "..", "v1", "../../secret.txt")
    blobs.put(hostile, b"stored")
    for prefix in ("../", "files/../"):
        with pytest.raises(ValueError):
            blobs.delete_prefix(prefix)
    with pytest.raises(ValueError), blobs.fetch("../secret.txt"):
        pass
    blobs.delete_prefix(hostile.split("/")[0] + "/")
    assert secret.read_text() == "keep me"
    assert all(p.is_relative_to(tmp_path / "files") for p in tmp_path.rglob("*") if p.name != "secret.txt")
