"""The behaviour every ``BlobStore`` shows, run against each implementation.

Subclass ``BlobStoreContract`` in a ``test_*.py`` module with a ``blobs`` fixture yielding an empty store
(the local folder in the fast tier, S3 on a real S3-speaking server in the integration tier).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingestion.blobs import BlobStore, document_prefix, version_key, version_prefix

EVERY_BYTE = bytes(range(256)) * 64
UNSAFE_KEYS = ["", "/abs/file", "../up", "a/../../b", "a//b", "a/./b", ".hidden", "a/.x", "a\\b", "a/b/", "é"]
UNSAFE_PREFIXES = ["", "/", "../", "a", "a/../", "/a/", "a//"]


class BlobStoreContract:
    def test_put_then_fetch_gives_the_same_bytes(self, blobs: BlobStore) -> None:
        blobs.put("t/doc/v1/every.bin", EVERY_BYTE)
        with blobs.fetch("t/doc/v1/every.bin") as path:
            assert path.read_bytes() == EVERY_BYTE

    def test_another_process_can_read_the_fetched_file(self, blobs: BlobStore) -> None:
        """The parser runs in a child process (``ingestion.sandbox``) and reads the file by its path."""
        blobs.put("t/doc/v1/bees.txt", b"honey bees dance")
        with blobs.fetch("t/doc/v1/bees.txt") as path:
            code = "import sys, pathlib; sys.stdout.write(pathlib.Path(sys.argv[1]).read_text())"
            out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=True)
        assert out.stdout == b"honey bees dance"

    def test_a_put_replaces_the_blob_whole(self, blobs: BlobStore) -> None:
        blobs.put("k/file.txt", b"a long first version " * 100)
        blobs.put("k/file.txt", b"short")
        with blobs.fetch("k/file.txt") as path:
            assert path.read_bytes() == b"short"
        assert blobs.list("k/") == ["k/file.txt"]

    def test_a_large_blob_round_trips(self, blobs: BlobStore) -> None:
        data = EVERY_BYTE * 700  # 11 MiB: past boto3's multipart threshold, and several read chunks
        blobs.put("big/one.pdf", data)
        with blobs.fetch("big/one.pdf") as path:
            assert path.stat().st_size == len(data) and path.read_bytes() == data

    def test_an_empty_blob_round_trips(self, blobs: BlobStore) -> None:
        blobs.put("e/empty.txt", b"")
        with blobs.fetch("e/empty.txt") as path:
            assert path.read_bytes() == b""
        assert blobs.list("e/") == ["e/empty.txt"]

    def test_fetching_a_missing_blob_is_file_not_found(self, blobs: BlobStore) -> None:
        blobs.put("there/a.txt", b"x")
        with pytest.raises(FileNotFoundError), blobs.fetch("there/b.txt"):
            pass
        with pytest.raises(FileNotFoundError), blobs.fetch("nowhere/a.txt"):
            pass

    def test_a_blob_stays_after_it_was_fetched(self, blobs: BlobStore) -> None:
        blobs.put("stay/a.txt", b"x")
        for _ in range(2):
            with blobs.fetch("stay/a.txt") as path:
                assert path.read_bytes() == b"x"
        assert blobs.list("stay/") == ["stay/a.txt"]

    def test_list_gives_the_keys_under_a_prefix_sorted(self, blobs: BlobStore) -> None:
        keys = ["a/b/2.txt", "a/b/1.txt", "a/b/c/3.txt", "a/bc/4.txt", "a/5.txt", "z/6.txt"]
        for key in keys:
            blobs.put(key, key.encode())
        assert blobs.list("a/b/") == ["a/b/1.txt", "a/b/2.txt", "a/b/c/3.txt"]
        assert blobs.list("a/") == ["a/5.txt", "a/b/1.txt", "a/b/2.txt", "a/b/c/3.txt", "a/bc/4.txt"]
        assert blobs.list("") == sorted(keys)
        assert blobs.list("nothing/") == []

    def test_delete_prefix_removes_what_is_under_it_and_nothing_else(self, blobs: BlobStore) -> None:
        for key in ["a/b/1.txt", "a/b/c/2.txt", "a/bc/3.txt", "a/4.txt"]:
            blobs.put(key, b"x")
        blobs.delete_prefix("a/b/")
        assert blobs.list("") == ["a/4.txt", "a/bc/3.txt"]
        with pytest.raises(FileNotFoundError), blobs.fetch("a/b/1.txt"):
            pass
        blobs.delete_prefix("a/b/")  # again: nothing there is no error
        blobs.delete_prefix("never/")
        blobs.put("a/b/1.txt", b"back")  # the prefix can be written again
        assert blobs.list("a/b/") == ["a/b/1.txt"]

    def test_concurrent_puts_of_one_key_each_land_whole(self, blobs: BlobStore) -> None:
        versions = [bytes([i]) * 200_000 for i in range(8)]

        def put(data: bytes) -> None:
            blobs.put("same/doc.txt", data)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put, versions * 2))
        with blobs.fetch("same/doc.txt") as path:
            assert path.read_bytes() in versions
        assert blobs.list("same/") == ["same/doc.txt"]

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_an_unsafe_key_is_refused_by_every_call(self, blobs: BlobStore, key: str) -> None:
        with pytest.raises(ValueError):
            blobs.put(key, b"x")
        with pytest.raises(ValueError), blobs.fetch(key):
            pass
        assert blobs.list("") == []

    @pytest.mark.parametrize("prefix", UNSAFE_PREFIXES)
    def test_an_unsafe_prefix_is_refused(self, blobs: BlobStore, prefix: str) -> None:
        blobs.put("a/b.txt", b"x")
        with pytest.raises(ValueError):
            blobs.delete_prefix(prefix)
        if prefix:
            with pytest.raises(ValueError):
                blobs.list(prefix)
        assert blobs.list("") == ["a/b.txt"]

    def test_the_upload_layout_keeps_documents_and_tenants_apart(self, blobs: BlobStore) -> None:
        """A hostile tenant, document id or file name makes a safe key, and deleting one document's prefix
        leaves another's (of the same tenant, or the same document id of another tenant) alone."""
        hostile = version_key("../../etc", "../../../passwd", "v1", "../../.bashrc")
        mine = version_key("t1", "doc", "v1", "doc.txt")
        theirs = version_key("t2", "doc", "v1", "doc.txt")
        other = version_key("t1", "doc-2", "v1", "doc.txt")
        for key in (hostile, mine, theirs, other):
            blobs.put(key, key.encode())
        assert hostile.startswith(document_prefix("../../etc", "../../../passwd"))
        assert mine.startswith(version_prefix("t1", "doc", "v1"))
        blobs.delete_prefix(document_prefix("t1", "doc"))
        assert blobs.list("") == sorted([hostile, theirs, other])
