"""The local-folder ``BlobStore`` (``INGEST_BLOB_STORE=local``, the embedded default): blobs are files under
``INGEST_DATA_DIR``, written atomically and fsynced (a temp file, fsync, rename, fsync of the folder) before
``put`` returns. ``fetch`` yields the stored file itself (no copy)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingestion.blobs import check_key, check_prefix


class LocalBlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        # check_key admits only plain relative parts, so the path stays under root.
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = path.parent
        folder.mkdir(parents=True, exist_ok=True)
        # A temp name of its own per write (two uploads of the same bytes at once must not share one), hidden:
        # no key starts with a dot, so ``list`` never shows it.
        tmp = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no stored file {key!r}")
        yield path

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix, allow_empty=True)
        folder = self.root.joinpath(*prefix.split("/")[:-1])
        if not folder.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith("."):
                    keys.append(name if base == "." else f"{base}/{name}")
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        shutil.rmtree(self.root.joinpath(*prefix.split("/")[:-1]), ignore_errors=True)
