"""The FastAPI application factory. Heavy resources are built in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from api import errors, metrics
from api.deps import get_tenant
from api.limits import Admission
from api.process import freeze_startup_heap, share_cores
from api.resources import Resources, Settings, build_resources
from api.routes import admin, documents, embeddings, health, keys, ops, rerank, review, search, web
from api.serving import MODEL_ROUTES, inference_gate, make_serving
from api.settings import UnsafeSettingsError, check_exposure

logger = logging.getLogger(__name__)


def search_gate(state: Mapping[str, Any]) -> Admission | None:
    resources = state.get("resources")
    return resources.search.admission if isinstance(resources, Resources) else None


def create_app(
    settings: Settings | None = None,
    *,
    resources_factory: Callable[[Settings], Resources] | None = None,
) -> FastAPI:
    settings = settings or Settings()
    factory = resources_factory or build_resources

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            check_exposure(settings.api, settings.api.host)
        except UnsafeSettingsError as exc:
            logger.error("%s", exc)
            raise
        resources = factory(settings)
        share_cores(settings.api)
        freeze_startup_heap()
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
            await resources.ratelimit.aclose()
            resources.close()

    app = FastAPI(title="Sieve", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    errors.limit_body(  # uploads are spooled to disk; any other body is parsed in memory
        app,
        settings.api.json_body_cap(),
        {("POST", "/v1/documents"): settings.api.upload_body_cap()},
    )
    errors.shed_when_full(  # 429 before the body, the key and the validation while a queue is full
        app,
        {("POST", "/v1/search"): search_gate, **dict.fromkeys(MODEL_ROUTES, inference_gate)},
    )
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
    app.include_router(keys.router)
    app.include_router(web.router)
    return app
