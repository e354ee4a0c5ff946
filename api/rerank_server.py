"""``sieve rerank-server``: the rerank stage as its own process (one per GPU).

It serves the configured local backend (``RERANK_BACKEND`` qwen3, cross-encoder or engine; ``RERANK_MODEL``,
``RERANK_DEVICE``) through the same compatible routes as the API (``/v1/rerank``, ``/v2/rerank``,
``/rerank``), plus ``/health``, ``/ready``, ``/info`` and ``/metrics``. Caps and the inference queue come from
the ``API_*`` settings. There are no API keys here: it is an internal service, reached by the query API with
``RERANK_BACKEND=remote`` and ``RERANK_URL``; do not expose it. The model loads before the port opens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import errors, metrics
from api.routes import ops, rerank
from api.serving import ModelsDep, make_serving
from api.settings import ApiSettings
from api.snapshot import ModelRegistry, ModelSnapshot
from reranking import Reranker, RerankError, RerankSettings, make_reranker

logger = logging.getLogger(__name__)

SERVICE = "sieve-rerank-server"


@dataclass
class RerankServerSettings:
    api: ApiSettings = field(default_factory=ApiSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)


def create_rerank_app(
    settings: RerankServerSettings | None = None, *, reranker: Reranker | None = None
) -> FastAPI:
    """The rerank server; ``reranker`` (tests) replaces the one ``RERANK_*`` describes."""
    settings = settings or RerankServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        model = reranker
        if model is None:
            if settings.rerank.backend.lower() == "remote":
                raise RerankError("a rerank server cannot use RERANK_BACKEND=remote: name a local backend")
            model = make_reranker(settings.rerank)
        await run_in_threadpool(model.warm_up)
        logger.info("rerank server ready: %s", model.name)
        models = ModelRegistry(ModelSnapshot(reranker=model, rerank=settings.rerank))
        yield {"serving": make_serving(SERVICE, settings.api, models)}

    app = FastAPI(title="Sieve rerank server", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    errors.limit_body(app, settings.api.max_request_bytes)
    metrics.instrument(app)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    def ready(models: ModelsDep) -> dict[str, Any]:
        return {"ready": True, "checks": {"reranker": models.reranker.name}}

    app.include_router(rerank.router)
    app.include_router(ops.router)
    return app
