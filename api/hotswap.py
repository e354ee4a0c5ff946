"""Swap models and the serving index in without downtime, by publishing a new model snapshot.

- ``reload``: build the new reranker (and, when asked, the query embedder), ``warm_up`` it while the old one
  keeps serving, then publish a new snapshot (``api.snapshot``) with it in one assignment. A request reads the
  snapshot once, so a request in flight finishes on the models it started with. A load that fails leaves the
  old snapshot serving. A query embedder is swapped only when the serving collection accepts it (same name
  and dimension as its builder); a new embedder needs a new index (``sieve reindex``).
- ``watch`` (a task of the app's lifespan): every ``API_INDEX_POLL_S`` seconds one Redis GET checks
  the serving pointer (``ingestion.indexes``); when a rebuild switched it, ``follow`` loads the new
  embedder, opens the new collection and publishes both; until then search serves from the old index.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.rerank_gate import RerankGate, reranker_identity
from api.snapshot import ModelRegistry, ModelSnapshot
from engine.hub import model_revision
from ingestion.errors import RedisUnavailableError
from ingestion.indexes import Indexes, IndexSpec, settings_spec
from reranking import Reranker, RerankError, RerankSettings
from retrieval import Embedder, EmbedderMismatchError, RetrievalError, RetrievalSettings, VectorStore

logger = logging.getLogger(__name__)

EmbedderFactory = Callable[[RetrievalSettings], Embedder]
RerankerFactory = Callable[[RerankSettings], Reranker]
StoreFactory = Callable[[RetrievalSettings], VectorStore]
MIN_POLL_S = 0.05  # API_INDEX_POLL_S=0: as often as this


class ReloadRequest(BaseModel):
    models: list[Literal["reranker", "embedder"]] = Field(
        default=["reranker"],  # pydantic copies it per request
        description="What to reload; naming an embedder field below reloads the embedder too.",
    )
    rerank_backend: str | None = Field(default=None, description="Default: RERANK_BACKEND, read again.")
    rerank_model: str | None = Field(default=None, description="Default: RERANK_MODEL, read again.")
    embedder: str | None = Field(default=None, description="Default: the serving index's embedder kind.")
    embedder_model: str | None = Field(
        default=None, description="Default: the serving index's embedder model."
    )


class ReloadResponse(BaseModel):
    reloaded: dict[str, str] = Field(description="What was swapped in: component -> model name.")


class HotSwap:
    def __init__(
        self,
        models: ModelRegistry,
        *,
        indexes: Indexes,
        retrieval: RetrievalSettings,
        embedder_factory: EmbedderFactory,
        reranker_factory: RerankerFactory,
        store_factory: StoreFactory,
        poll_s: float = 2.0,
    ) -> None:
        self.models = models
        self.indexes = indexes
        self.retrieval = retrieval
        self.embedder_factory = embedder_factory
        self.reranker_factory = reranker_factory
        self.store_factory = store_factory
        self.poll_s = poll_s
        self._lock = threading.Lock()  # one reload or switch at a time
        self._generation: int | None = None

    @property
    def default_spec(self) -> IndexSpec:
        return settings_spec(self.retrieval)

    @property
    def spec(self) -> IndexSpec:
        """The index search serves from in this process."""
        return self.models.current().index or self.default_spec

    # -- reload ---------------------------------------------------------------------------------------
    def reload(self, request: ReloadRequest) -> ReloadResponse:
        wanted = set(request.models)
        if request.embedder is not None or request.embedder_model is not None:
            wanted.add("embedder")
        if not self._lock.acquire(blocking=False):
            raise ApiError(409, "a reload or an index switch is in progress; try again when it ends")
        try:
            current = self.models.current()
            changes: dict[str, Any] = {}
            reloaded: dict[str, str] = {}
            if "embedder" in wanted:
                changes["embedder"], changes["index"] = self._load_embedder(current, request)
                reloaded["embedder"] = changes["embedder"].name
            if "reranker" in wanted:
                reranker, settings = self._load_reranker(current, request)
                changes.update(reranker=reranker, rerank=settings)
                if current.gate is not None:  # the gate's stored decisions are per reranker revision
                    identity = reranker_identity(reranker, settings)
                    changes["gate"] = RerankGate(current.gate.mode, current.gate.store, identity)
                reloaded["reranker"] = reranker.name
            self.models.publish(current.replace(**changes))
            logger.info("reloaded %s", reloaded)
            return ReloadResponse(reloaded=reloaded)
        finally:
            self._lock.release()

    def _load_reranker(
        self, current: ModelSnapshot, request: ReloadRequest
    ) -> tuple[Reranker, RerankSettings]:
        settings = RerankSettings()  # RERANK_* read again, then the request's overrides
        overrides = {"backend": request.rerank_backend, "model": request.rerank_model}
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        old = current.reranker.name
        try:
            reranker = self.reranker_factory(settings)
            reranker.warm_up()
        except (RerankError, RetrievalError, ValueError, OSError) as exc:
            raise ApiError(
                422,
                f"could not load reranker {settings.backend!r} {settings.model!r}: {exc}; "
                f"{old} keeps serving",
            ) from exc
        return reranker, settings

    def _load_embedder(self, current: ModelSnapshot, request: ReloadRequest) -> tuple[Embedder, IndexSpec]:
        embedder_now, store, _ = current.search_models()
        overrides = {"embedder": request.embedder, "embedder_model": request.embedder_model}
        spec = self.spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        old = embedder_now.name
        try:
            embedder = self.embedder_factory(spec.settings(self.retrieval))
            embedder.warm_up()
            store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
        except EmbedderMismatchError as exc:
            raise ApiError(
                409,
                f"{exc}. A new embedder needs a new index: run `sieve reindex --embedder-model "
                f"{spec.embedder_model or 'PATH'} --embedder {spec.embedder}` (POST /v1/admin/reindex), "
                f"which builds it beside the serving one and switches when complete; {old} keeps serving",
            ) from exc
        except (RerankError, RetrievalError, ValueError, OSError) as exc:
            raise ApiError(
                422, f"could not load embedder {spec.embedder!r}: {exc}; {old} keeps serving"
            ) from exc
        return embedder, spec.model_copy(update={"revision": model_revision(spec.embedder_model) or ""})

    # -- the serving index --------------------------------------------------------------------------
    async def watch(self) -> None:
        """Follow switches of the serving index until cancelled (the app's lifespan runs this)."""
        while True:
            await asyncio.sleep(max(self.poll_s, MIN_POLL_S))
            await run_in_threadpool(self.check)

    def check(self) -> bool:
        """Notice a switch of the serving index cheaply (one Redis GET) and follow it; whether it switched."""
        try:
            generation = self.indexes.generation()
        except RedisUnavailableError as exc:  # Redis down: keep serving what serves
            logger.debug("could not read the serving index: %s", exc)
            return False
        if generation == self._generation:
            return False
        return self.follow()

    def follow(self) -> bool:
        """Serve from the index the pointer names (load its embedder, open its collection, publish them).
        Returns whether it switched. A failure is logged and tried again at the next check."""
        with self._lock:
            current = self.models.current()
            try:
                generation = self.indexes.generation()
                spec = self.indexes.serving(self.default_spec)
                if spec.same_index(self.spec):
                    if spec != current.index:
                        self.models.publish(current.replace(index=spec))
                    self._generation = generation
                    return False
                settings = spec.settings(self.retrieval)
                embedder = self.embedder_factory(settings)
                embedder.warm_up()
                store = self.store_factory(settings)
                store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
            except Exception:  # noqa: BLE001 - the index watch must live on: the old index serves, retried
                logger.exception("could not switch to the new serving index; the old one keeps serving")
                return False
            self.models.publish(current.replace(embedder=embedder, store=store, index=spec))
            self._generation = generation
            logger.info("search now serves index %s (embedder %s)", spec.collection, embedder.name)
            return True

    def status(self, models: ModelSnapshot | None = None) -> dict[str, Any]:
        """The serving index (``models``'s, default the current snapshot's) and the rebuild, if any (for
        ``/info`` and ``GET /v1/admin/reindex``)."""
        spec = (models or self.models.current()).index or self.default_spec
        found: dict[str, Any] = {"serving": spec.model_dump(exclude_defaults=True)}
        try:
            build = self.indexes.build()
            previous = self.indexes.previous()
        except RedisUnavailableError:  # Redis down: what this process knows
            return found
        if build is not None:
            found["rebuild"] = build.model_dump(mode="json")
        if previous is not None:
            found["previous"] = previous.model_dump(exclude_defaults=True)
        return found
