"""What the API process holds for its lifetime: Redis, the task sender, the search pipeline, and the model
registry that every request reads its models from (``api.snapshot``). Built once in the lifespan; nothing in
``Resources`` is replaced afterwards: a reload or an index switch publishes a new model snapshot."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
import redis.asyncio
from celery import Celery

from api.cache import SearchCache
from api.hotswap import HotSwap, StoreFactory
from api.ratelimit import RateLimiter, async_client
from api.rerank_gate import GateStore, RerankGate, reranker_identity
from api.review import ReviewQueue, ReviewSink
from api.search import SearchService
from api.settings import ApiSettings
from api.snapshot import ModelRegistry, ModelSnapshot
from api.tenant_keys import TenantKeys
from engine.hub import model_revision
from ingestion.errors import RedisUnavailableError
from ingestion.indexes import Indexes, IndexSpec, settings_spec
from ingestion.records import Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from reranking import Reranker, RerankSettings, make_reranker
from retrieval import (
    Embedder,
    RetrievalSettings,
    StoreUnavailableError,
    VectorStore,
    make_embedder,
    make_store,
)

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    api: ApiSettings = field(default_factory=ApiSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    models: ModelRegistry  # the serving model snapshot: read it with ``models.current()``
    records: Records
    uploads: Uploads
    search: SearchService
    ratelimit: RateLimiter
    review: ReviewSink
    gates: GateStore
    swap: HotSwap  # reloads models and follows the serving index
    keys: TenantKeys | None = None  # tenant keys stored in Redis (``api.tenant_keys``)

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
    async_redis_client: redis.asyncio.Redis | None = None,
    store_factory: StoreFactory = make_store,
) -> Resources:
    """Build and warm up everything; parts passed in (tests) are used as they are. The embedder and the
    collection are the serving index's (``ingestion.indexes``): the settings' until a rebuild switched.
    The rate limiter asks Redis from the event loop through an asyncio client: ``async_redis_client``, else
    one on ``INGEST_REDIS_URL`` unless ``redis_client`` was passed (then it calls that one inline)."""
    api = settings.api
    records = Records(settings.ingest.redis_url, client=redis_client)
    indexes = Indexes(records.client)
    spec = serving_index(settings.retrieval, indexes)
    retrieval = spec.settings(settings.retrieval)
    embedder = embedder or make_embedder(retrieval)
    embedder.warm_up()
    store = store or store_factory(retrieval)
    try:
        store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    except StoreUnavailableError as exc:
        # Start anyway: /ready says not ready, search answers 503 until the store is back.
        logger.warning("vector store not reachable at start: %s", exc)
    reranker = reranker or make_reranker(settings.rerank)
    reranker.warm_up()
    if sender is None:
        sender = Celery("sieve", broker=settings.ingest.redis_url)
    gates = GateStore(records.client)
    models = ModelRegistry(
        ModelSnapshot(
            reranker=reranker,
            rerank=settings.rerank,
            embedder=embedder,
            store=store,
            gate=RerankGate(api.rerank_gate, gates, reranker_identity(reranker, settings.rerank)),
            index=spec.model_copy(update={"embedder_name": embedder.name}),
        )
    )
    review = ReviewQueue(records.client)
    limiter = RateLimiter(
        records.client,
        rate=api.rate_limit_per_s,
        burst=api.rate_limit_burst,
        overrides=api.rate_limits,
        aclient=async_redis_client
        or (async_client(settings.ingest.redis_url) if redis_client is None else None),
    )
    return Resources(
        settings,
        models,
        records,
        Uploads(settings.ingest, records, sender),  # type: ignore[arg-type] # Celery satisfies TaskSender
        SearchService(
            records=records,
            cache=SearchCache(records.client, ttl_s=api.cache_ttl_s),
            review=review,
            settings=api,
            default_mode=settings.retrieval.search_mode,
            default_fusion=settings.retrieval.fusion,
        ),
        limiter,
        review,
        gates,
        HotSwap(
            models,
            indexes=indexes,
            retrieval=settings.retrieval,
            embedder_factory=make_embedder,
            reranker_factory=make_reranker,
            store_factory=store_factory,
            poll_s=api.index_poll_s,
        ),
        keys=TenantKeys(records.client, aclient=limiter.aclient),
    )


def serving_index(settings: RetrievalSettings, indexes: Indexes) -> IndexSpec:
    """The index the pointer in Redis names, else the settings' (also when Redis is down at start)."""
    default = settings_spec(settings, model_revision(settings.embedder_model) or "")
    try:
        return indexes.serving(default)
    except RedisUnavailableError as exc:  # start anyway: /ready says not ready until Redis is back
        logger.warning("could not read the serving index (Redis): %s; using RETRIEVAL_COLLECTION", exc)
        return default
