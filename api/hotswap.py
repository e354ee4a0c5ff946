"""Swap models and the serving index in without downtime.

- ``reload``: build the new reranker (and, when asked, the query embedder), ``warm_up`` it while the old one
  keeps serving, then swap. A search takes the ``SearchService`` once per request and the swap publishes a new
  one in a single assignment, so a request in flight finishes on the models it started with. A load that
  fails leaves the old model serving. A query embedder is swapped only when the serving collection accepts it
  (same name and dimension as its builder); a new embedder needs a new index (``sieve reindex``).
- ``refresh`` (on each search and ``/info``): the serving pointer (``ingestion.indexes``) is checked at most
  every ``API_INDEX_POLL_S`` seconds (one Redis GET); when a rebuild switched it, a background thread loads
  the new embedder, opens the new collection and swaps both in; until then search serves from the old index.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from api.errors import ApiError
from api.gate_store import RerankGate, reranker_identity
from api.serving import Serving
from engine.hub import model_revision
from ingestion.indexes import Indexes, IndexSpec, settings_spec
from reranking import Reranker, RerankError, RerankSettings
from retrieval import Embedder, EmbedderMismatchError, RetrievalError, RetrievalSettings, VectorStore

if TYPE_CHECKING:
    from api.resources import Resources

logger = logging.getLogger(__name__)

EmbedderFactory = Callable[[RetrievalSettings], Embedder]
RerankerFactory = Callable[[RerankSettings], Reranker]
StoreFactory = Callable[[RetrievalSettings], VectorStore]


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
        resources: Resources,
        *,
        indexes: Indexes,
        spec: IndexSpec,
        embedder_factory: EmbedderFactory,
        reranker_factory: RerankerFactory,
        store_factory: StoreFactory,
        poll_s: float = 2.0,
    ) -> None:
        self.resources = resources
        self.indexes = indexes
        self.spec = spec  # the index search serves from in this process
        self.embedder_factory = embedder_factory
        self.reranker_factory = reranker_factory
        self.store_factory = store_factory
        self.poll_s = poll_s
        self.servings: list[Serving] = []
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload or switch at a time
        self._generation: int | None = None
        self._checked = float("-inf")

    @property
    def default_spec(self) -> IndexSpec:
        return settings_spec(self.resources.settings.retrieval)

    def attach(self, serving: Serving) -> None:
        """Keep ``serving`` (the model routes' view) pointing at the models that serve."""
        self.servings.append(serving)

    # -- reload ---------------------------------------------------------------------------------------
    def reload(self, request: ReloadRequest) -> ReloadResponse:
        wanted = set(request.models)
        if request.embedder is not None or request.embedder_model is not None:
            wanted.add("embedder")
        if not self._lock.acquire(blocking=False):
            raise ApiError(409, "a reload or an index switch is in progress; try again when it ends")
        try:
            reloaded: dict[str, str] = {}
            new_embedder = self._load_embedder(request) if "embedder" in wanted else None
            new_reranker = self._load_reranker(request) if "reranker" in wanted else None
            if new_embedder is not None:
                self._swap(embedder=new_embedder)
                reloaded["embedder"] = new_embedder.name
            if new_reranker is not None:
                reranker, settings = new_reranker
                self._swap(reranker=reranker, rerank=settings)
                reloaded["reranker"] = reranker.name
            logger.info("reloaded %s", reloaded)
            return ReloadResponse(reloaded=reloaded)
        finally:
            self._lock.release()

    def _load_reranker(self, request: ReloadRequest) -> tuple[Reranker, RerankSettings]:
        settings = RerankSettings()  # RERANK_* read again, then the request's overrides
        overrides = {"backend": request.rerank_backend, "model": request.rerank_model}
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        old = self.resources.reranker.name
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

    def _load_embedder(self, request: ReloadRequest) -> Embedder:
        overrides = {"embedder": request.embedder, "embedder_model": request.embedder_model}
        spec = self.spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        old = self.resources.embedder.name
        try:
            embedder = self.embedder_factory(spec.settings(self.resources.settings.retrieval))
            embedder.warm_up()
            self.resources.store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
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
        self.spec = spec.model_copy(update={"revision": model_revision(spec.embedder_model) or ""})
        return embedder

    def _swap(
        self,
        *,
        embedder: Embedder | None = None,
        store: VectorStore | None = None,
        reranker: Reranker | None = None,
        rerank: RerankSettings | None = None,
    ) -> None:
        res = self.resources
        search = copy.copy(res.search)  # shares the stage-2 threads and every other setting
        if embedder is not None:
            search.embedder = res.embedder = embedder
        if store is not None:
            search.store = res.store = store
        if reranker is not None:
            search.reranker = res.reranker = reranker
            gate = getattr(search, "gate", None)
            if gate is not None:  # the gate's stored decisions are per reranker revision
                search.gate = RerankGate(gate.mode, gate.store, reranker_identity(reranker, rerank))
        if rerank is not None:
            res.settings.rerank = rerank
        res.search = search  # the one assignment a request sees: all old or all new
        for serving in self.servings:
            if embedder is not None and serving.embedder is not None:
                serving.embedder = embedder
            if reranker is not None:
                serving.reranker = reranker
            if rerank is not None:
                serving.rerank = rerank

    # -- the serving index --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Notice a switch of the serving index cheaply; follow it in the background."""
        now = time.monotonic()
        if now - self._checked < self.poll_s:
            return
        self._checked = now
        try:
            generation = self.indexes.generation()
        except Exception as exc:  # Redis down: keep serving what serves
            logger.debug("could not read the serving index: %s", exc)
            return
        if generation == self._generation or (self.thread is not None and self.thread.is_alive()):
            return
        self.thread = threading.Thread(target=self.follow, name="index-switch", daemon=True)
        self.thread.start()

    def follow(self) -> bool:
        """Serve from the index the pointer names (load its embedder, open its collection, swap them in).
        Returns whether it switched. A failure is logged and tried again at the next ``refresh``."""
        with self._lock:
            try:
                generation = self.indexes.generation()
                spec = self.indexes.serving(self.default_spec)
                if spec.same_index(self.spec):
                    self.spec, self._generation = spec, generation
                    return False
                settings = spec.settings(self.resources.settings.retrieval)
                embedder = self.embedder_factory(settings)
                embedder.warm_up()
                store = self.store_factory(settings)
                store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
            except Exception:
                logger.exception("could not switch to the new serving index; the old one keeps serving")
                return False
            self._swap(embedder=embedder, store=store)
            self.spec, self._generation = spec, generation
            logger.info("search now serves index %s (embedder %s)", spec.collection, embedder.name)
            return True

    def status(self) -> dict[str, Any]:
        """The serving index and the rebuild, if any (for ``/info`` and ``GET /v1/admin/reindex``)."""
        self.refresh()  # an idle API (no searches) follows a switch too
        found: dict[str, Any] = {"serving": self.spec.model_dump(exclude_defaults=True)}
        try:
            build = self.indexes.build()
            previous = self.indexes.previous()
        except Exception:  # Redis down: what this process knows
            return found
        if build is not None:
            found["rebuild"] = build.model_dump(mode="json")
        if previous is not None:
            found["previous"] = previous.model_dump(exclude_defaults=True)
        return found
