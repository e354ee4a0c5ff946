"""Backends of the ingestion stage and their factory: the blob stores of uploaded files
(``ingestion.blobs``).

``BLOB_STORES`` maps each ``INGEST_BLOB_STORE`` name to a factory; a factory imports its backend only when it
is called, so the embedded stack never imports boto3 (the ``s3`` extra).
"""

from __future__ import annotations

from collections.abc import Callable

from ingestion.blobs import BlobStore
from ingestion.settings import IngestSettings

BlobStoreFactory = Callable[[IngestSettings], BlobStore]


def _local(settings: IngestSettings) -> BlobStore:
    from ingestion.backends.local_blobs import LocalBlobStore

    return LocalBlobStore(settings.data_dir)


def _s3(settings: IngestSettings) -> BlobStore:
    try:
        from ingestion.backends.s3_blobs import S3BlobStore
    except ModuleNotFoundError as exc:
        if exc.name not in ("boto3", "botocore"):
            raise
        raise ModuleNotFoundError(
            "INGEST_BLOB_STORE=s3 needs boto3: pip install 'sieve[s3]'", name=exc.name
        ) from exc

    return S3BlobStore.from_settings(settings)


BLOB_STORES: dict[str, BlobStoreFactory] = {"local": _local, "s3": _s3}


def make_blob_store(settings: IngestSettings) -> BlobStore:
    """The blob store ``INGEST_BLOB_STORE`` names, configured from ``settings``."""
    try:
        factory = BLOB_STORES[settings.blob_store]
    except KeyError:
        raise ValueError(
            f"unknown INGEST_BLOB_STORE {settings.blob_store!r}; one of {', '.join(BLOB_STORES)}"
        ) from None
    return factory(settings)
