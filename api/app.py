"""The FastAPI application factory. Heavy resources are built in the lifespan, never at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api import errors
from api.resources import Resources, Settings, build_resources
from api.routes import documents, health, search

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
        except Exception as exc:  # Redis down at start: jobs stay pending until the next start
            logger.warning("could not re-enqueue pending jobs: %s", exc)
        if not settings.api.keys:
            logger.warning("no API keys configured (API_KEYS): every request will be refused with 401")
        yield {"resources": resources}
        resources.close()

    app = FastAPI(title="Sieve", version="0.1.0", lifespan=lifespan)
    errors.install(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.api.max_request_bytes:
            body = errors.error_body(
                413, f"request body is {length} bytes; the limit is {settings.api.max_request_bytes}"
            )
            return JSONResponse(body, 413)
        return await call_next(request)

    app.include_router(health.router)
    app.include_router(documents.router)
    app.include_router(search.router)
    return app
