"""Where uploaded files live: the ``BlobStore`` protocol and the layout of its keys.

The API writes an accepted upload once (``put``, before the upload is answered); a worker reads it for the
parser (``fetch``: a local file for the length of a ``with`` block), a rebuild finds a version's file by its
prefix (``list``), and deleting a document removes its files (``delete_prefix``). Implementations, picked by
``INGEST_BLOB_STORE`` in ``ingestion.backends``: the local folder ``INGEST_DATA_DIR`` (the embedded default;
API and workers share it as a disk) and an S3-compatible bucket (MinIO, AWS S3, the object store Milvus uses),
which API and workers on different machines share over the network.

Keys are relative, ``/``-separated paths whose parts are ``[A-Za-z0-9._-]`` and never start with a dot (so no
``..``, no absolute path, no hidden or temporary name); ``check_key`` enforces it for every call, so a
client-supplied name cannot reach outside the store. One version of a document is stored at
``{tenant}/{hash of tenant and document id}/{version}/{file name}`` (``version_key``): the layout the local
folder has always had, so files written before the blob store are found where they are.

Errors: a blob that is not there raises ``FileNotFoundError``; a store that cannot be reached raises
``BlobStoreUnavailableError`` (``ingestion.errors``); a key against the rules raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from ingestion.files import safe_name

_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
MAX_KEY_CHARS = 900  # S3 allows 1024 bytes; room for a store's own prefix


@runtime_checkable
class BlobStore(Protocol):
    """Bytes under keys. ``put`` is atomic: a reader sees the whole previous blob or the whole new one, never
    a part; concurrent puts of one key each land whole (the last one wins)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` durably (replacing what was there) before returning."""
        ...

    def fetch(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding the blob, for the length of the ``with`` block (a download is removed after
        it); ``FileNotFoundError`` when there is no such blob."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (``""`` or ending in ``/``), sorted."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under ``prefix`` (not empty, ending in ``/``); nothing there is no error."""
        ...


def check_key(key: str) -> str:
    """``key`` if it follows the rules of the module docstring, else ``ValueError``."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"blob key must be 1 to {MAX_KEY_CHARS} characters")
    if not all(_PART.fullmatch(part) for part in key.split("/")):
        raise ValueError(f"blob key {key[:80]!r} has an empty, hidden or unsafe part")
    return key


def check_prefix(prefix: str, *, allow_empty: bool = False) -> str:
    """``prefix`` if it is ``""`` (when allowed) or a valid key followed by ``/``, else ``ValueError``."""
    if prefix == "" and allow_empty:
        return prefix
    if not prefix.endswith("/"):
        raise ValueError(f"blob prefix {prefix[:80]!r} must end with '/'")
    check_key(prefix[:-1])
    return prefix


def document_prefix(tenant: str, document_id: str) -> str:
    """The prefix of every stored version of one document of one tenant."""
    digest = hashlib.sha256(f"{tenant}\x1f{document_id}".encode()).hexdigest()[:24]
    return check_prefix(f"{safe_name(tenant, limit=40)}/{digest}/")


def version_prefix(tenant: str, document_id: str, version: str) -> str:
    """The prefix of one version's stored file."""
    return check_prefix(f"{document_prefix(tenant, document_id)}{version}/")


def version_key(tenant: str, document_id: str, version: str, filename: str) -> str:
    """The key of one version's stored file (``filename`` as the client sent it; made safe here)."""
    return check_key(f"{version_prefix(tenant, document_id, version)}{safe_name(filename)}")
