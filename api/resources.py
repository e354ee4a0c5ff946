"""What the API process holds for its lifetime: models, store, Redis, the task sender."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from celery import Celery

from api.cache import SearchCache
from api.models import build_embedder
from api.ratelimit import RateLimiter
from api.review import ReviewQueue, ReviewSink
from api.search import SearchService
from api.settings import ApiSettings
from ingestion.records import Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from reranking import Reranker, RerankSettings, make_reranker
from retrieval import Embedder, RetrievalSettings, StoreUnavailableError, VectorStore, make_store

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    api: ApiSettings = field(default_factory=ApiSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)


@dataclass
class Resources:
    settings: Settings
    embedder: Embedder
    store: VectorStore
    reranker: Reranker
    records: Records
    uploads: Uploads
    search: SearchService
    cache: SearchCache
    ratelimit: RateLimiter
    review: ReviewSink

    def close(self) -> None:
        self.search.close()
        self.records.close()


def build_resources(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    store: VectorStore | None = None,
    reranker: Reranker | None = None,
    sender: object | None = None,
    redis_client: redis.Redis | None = None,
) -> Resources:
    """Build and warm up everything; parts passed in (tests) are used as they are."""
    embedder = embedder or build_embedder(settings.retrieval)
    embedder.warm_up()
    store = store or make_store(settings.retrieval)
    try:
        store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    except StoreUnavailableError as exc:
        # Start anyway: /ready says not ready, search answers 503 until the store is back.
        logger.warning("vector store not reachable at start: %s", exc)
    reranker = reranker or make_reranker(settings.rerank)
    reranker.warm_up()
    records = Records(settings.ingest.redis_url, client=redis_client)
    if sender is None:
        sender = Celery("sieve", broker=settings.ingest.redis_url)
    uploads = Uploads(settings.ingest, records, sender)  # type: ignore[arg-type] # Celery satisfies TaskSender
    search = SearchService(
        embedder=embedder,
        store=store,
        records=records,
        reranker=reranker,
        stale_slack=settings.api.stale_slack,
        rerank_deadline_s=settings.api.rerank_deadline_s,
        default_mode=settings.retrieval.search_mode,
        default_fusion=settings.retrieval.fusion,
    )
    api = settings.api
    return Resources(
        settings,
        embedder,
        store,
        reranker,
        records,
        uploads,
        search,
        cache=SearchCache(records.client, ttl_s=api.cache_ttl_s),
        ratelimit=RateLimiter(
            records.client, rate=api.rate_limit_per_s, burst=api.rate_limit_burst, overrides=api.rate_limits
        ),
        review=ReviewQueue(records.client),
    )
