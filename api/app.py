"""The FastAPI application factory. Heavy resources are built in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from api import errors, metrics
from api.deps import get_tenant
from api.resources import Resources, Settings, build_resources
from api.routes import admin, documents, embeddings, health, ops, rerank, review, search, web
from api.serving import make_serving

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    resources_factory: Callable[[Settings], Resources] | None = None,
) -> FastAPI:
    settings = settings or Settings()
    factory = resources_factory or build_resources

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        resources = factory(settings)
        try:
            resources.uploads.recover()
        except Exception as exc:  # noqa: BLE001 - Redis or broker down at start: jobs wait for the next start
            logger.warning("could not re-enqueue pending jobs: %s", exc)
        if not settings.api.keys:
            logger.warning("no API keys configured (API_KEYS): every request will be refused with 401")
        serving = make_serving("sieve-api", settings.api, resources.models, resources.swap.status)
        watch = asyncio.create_task(resources.swap.watch(), name="index-watch")
        try:
            yield {"resources": resources, "serving": serving}
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            resources.close()

    app = FastAPI(title="Sieve", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    errors.limit_body(app, settings.api.max_request_bytes)
    metrics.instrument(app)

    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(search.router)
    app.include_router(review.router)
    # The compatible endpoints take the same API keys (OpenAI and Cohere clients send them as Bearer tokens).
    app.include_router(rerank.router, dependencies=[Depends(get_tenant)])
    app.include_router(embeddings.router, dependencies=[Depends(get_tenant)])
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(web.router)
    return app
