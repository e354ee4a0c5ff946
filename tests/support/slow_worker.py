"""A real Celery ingestion worker whose embedder is slow on purpose, so that a test can act while a job runs.

``celery_app().worker_main([...])`` (``tests.support.ingest_services.celery_worker``): the product's worker
(``ingestion.worker``, settings from the environment, the Milvus store of ``RETRIEVAL_MILVUS_URI``) with a
hashed bag-of-words embedder that sleeps ``SIEVE_TEST_EMBED_DELAY_S`` (0.5) per batch. Tests only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
from celery import Celery

from ingestion.settings import IngestSettings
from ingestion.worker import WorkerContext, make_celery
from retrieval import RetrievalSettings
from tests.support.fakes import HashEmbedder


class SlowEmbedder(HashEmbedder):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().embed_documents(texts)


def celery_app() -> Celery:
    delay = float(os.environ.get("SIEVE_TEST_EMBED_DELAY_S", "0.5"))
    context = WorkerContext(
        IngestSettings(), RetrievalSettings(), embedder_factory=lambda _: SlowEmbedder(delay)
    )
    return make_celery(context=context)
