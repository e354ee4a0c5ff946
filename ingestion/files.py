"""Names of accepted uploads: the version of an upload (a hash of its bytes and metadata) and the safe form
of a client-supplied name. Where the files are stored is ``ingestion.blobs``."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_version(data: bytes, metadata: dict[str, Any] | None = None) -> str:
    """The version of a document is a hash of its bytes and its upload's metadata: the same file with the same
    metadata always has the same version, and new metadata on the same bytes makes a new version (whose chunks
    carry it). Without metadata it is the hash of the bytes alone."""
    digest = hashlib.sha256(data)
    if metadata:
        canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest.update(b"\x00metadata\x00" + canonical.encode())
    return digest.hexdigest()[:16]


def safe_name(name: str, *, limit: int = 120) -> str:
    """A file-system-safe rendering of a client-supplied name (no separators, no dot-dot)."""
    base = _SAFE.sub("_", os.path.basename(name.replace("\\", "/"))).strip("._") or "file"
    return base[:limit]
