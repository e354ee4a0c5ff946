"""The S3-compatible ``BlobStore`` (``INGEST_BLOB_STORE=s3``): blobs are objects of ``INGEST_S3_BUCKET`` under
``INGEST_S3_PREFIX``, on AWS S3 or any server that speaks its API (MinIO, the object store Milvus uses, Ceph).

``put`` is one PutObject: S3 makes an object visible whole or not at all, and a later put of the key replaces
it whole. ``fetch`` downloads the object to a temp file (in ``INGEST_S3_DOWNLOAD_DIR``, else the system's temp
folder) and removes it when the ``with`` block ends. Credentials come from ``INGEST_S3_ACCESS_KEY_ID`` /
``INGEST_S3_SECRET_ACCESS_KEY`` when set, else from boto3's own chain (``AWS_*`` variables, a profile, an
instance or pod role). Needs the ``s3`` extra (boto3).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ingestion.blobs import check_key, check_prefix
from ingestion.errors import BlobStoreUnavailableError
from ingestion.settings import IngestSettings

logger = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects takes


class S3BlobStore:
    """Blobs in ``bucket`` under ``prefix`` through a boto3 S3 ``client`` (thread-safe; one per process)."""

    def __init__(
        self, client: Any, bucket: str, *, prefix: str = "", download_dir: str | None = None
    ) -> None:
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket (INGEST_S3_BUCKET)")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.client = client
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.download_dir = download_dir or None

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> S3BlobStore:
        return cls(
            make_client(settings),
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            download_dir=str(settings.s3_download_dir) if settings.s3_download_dir else None,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        with _errors(f"put {key}"):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data)

    @contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        name = self._name(key)
        suffix = "-" + key.rsplit("/", 1)[-1][-60:]
        if self.download_dir:  # created here: a missing folder must not read as a missing blob
            os.makedirs(self.download_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="sieve-blob-", suffix=suffix, dir=self.download_dir)
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as fh, _errors(f"fetch {key}"):
                body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
                try:
                    shutil.copyfileobj(body, fh, 1 << 20)
                finally:
                    body.close()
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _names(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"]

    def list(self, prefix: str) -> list[str]:
        check_prefix(prefix, allow_empty=True)
        with _errors(f"list {prefix}"):
            return sorted(name[len(self.prefix) :] for name in self._names(prefix))

    def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        with _errors(f"delete {prefix}"):
            names = list(self._names(prefix))
            for start in range(0, len(names), _DELETE_BATCH):
                batch = [{"Key": name} for name in names[start : start + _DELETE_BATCH]]
                reply = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                failed = reply.get("Errors") or []
                if failed:
                    first = failed[0]
                    logger.warning(
                        "blob store: %d blobs under %s not deleted (%s: %s)",
                        len(failed),
                        prefix,
                        first.get("Code"),
                        first.get("Message"),
                    )
                    raise BlobStoreUnavailableError(f"file storage refused to delete ({first.get('Code')})")


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """boto's errors as the blob store's: a missing object ``FileNotFoundError``, anything else from the
    server or the connection ``BlobStoreUnavailableError``. Their messages (which an upload's answer may
    carry) name the operation and S3's error code, never the endpoint or the bucket; the log has the rest."""
    operation = what.split(" ", 1)[0]
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise FileNotFoundError(f"no stored file ({what})") from exc
        logger.warning("blob store: %s failed: %s", what, exc)
        raise BlobStoreUnavailableError(f"file storage refused to {operation} ({code or 'error'})") from exc
    except BotoCoreError as exc:
        logger.warning("blob store: %s failed: %s", what, exc)
        raise BlobStoreUnavailableError(f"file storage is unreachable ({operation})") from exc


def make_client(settings: IngestSettings) -> Any:
    """A boto3 S3 client from the ``INGEST_S3_*`` settings."""
    endpoint = settings.s3_endpoint_url or None
    style = settings.s3_addressing_style
    if style == "auto" and endpoint:
        style = "path"  # MinIO and most self-hosted servers serve buckets as paths, not as host names
    config = Config(
        s3={"addressing_style": style},
        connect_timeout=settings.s3_timeout_s,
        read_timeout=settings.s3_timeout_s,
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        # Checksums only where S3 requires them: S3-compatible servers do not all accept the newer defaults.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    secret = settings.s3_secret_access_key.get_secret_value()
    credentials = (
        {"aws_access_key_id": settings.s3_access_key_id, "aws_secret_access_key": secret}
        if settings.s3_access_key_id
        else {}
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=settings.s3_region or None, config=config, **credentials
    )
