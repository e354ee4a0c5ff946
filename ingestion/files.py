"""Durable storage of accepted uploads: a file is on disk (fsynced) before the upload is answered."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
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


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _doc_dir(self, tenant: str, document_id: str) -> Path:
        key = hashlib.sha256(f"{tenant}\x1f{document_id}".encode()).hexdigest()[:24]
        return self.root / safe_name(tenant, limit=40) / key

    def save(self, tenant: str, document_id: str, version: str, filename: str, data: bytes) -> Path:
        """Write atomically (temp file, fsync, rename, fsync dir) and return the path."""
        folder = self._doc_dir(tenant, document_id) / version
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe_name(filename)
        # A temp name of its own per write: two uploads of the same bytes at once must not share one.
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path

    def find(self, tenant: str, document_id: str, version: str) -> Path | None:
        """The stored file of one version of a document (None when it is gone)."""
        folder = self._doc_dir(tenant, document_id) / version
        found = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.endswith(".part"))
        return found[0] if found else None

    def remove_document(self, tenant: str, document_id: str, *, keep_version: str | None = None) -> None:
        folder = self._doc_dir(tenant, document_id)
        if not folder.exists():
            return
        for child in folder.iterdir():
            if child.name != keep_version:
                shutil.rmtree(child, ignore_errors=True)
        if keep_version is None:
            shutil.rmtree(folder, ignore_errors=True)
