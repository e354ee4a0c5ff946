"""``sieve rerank-server``: the rerank stage as its own process (one per GPU).

It serves the configured local backend (``RERANK_BACKEND`` qwen3, cross-encoder or engine; ``RERANK_MODEL``,
``RERANK_DEVICE``) through the same compatible routes as the API (``/v1/rerank``, ``/v2/rerank``,
``/rerank``), plus ``/health``, ``/ready``, ``/info`` and ``/metrics``. Caps and the inference queue come from
the ``API_*`` settings, as does the GIL's switch interval (``API_GIL_SWITCH_MS``; ``api.process``). It is an
internal service, reached by the query API with ``RERANK_BACKEND=remote``
and ``RERANK_URL``. There are no API keys here but one shared token, ``RERANK_SERVER_TOKEN``: when it is set,
every route but ``/health`` and ``/ready`` asks for ``Authorization: Bearer <token>`` (401 otherwise), and the
API's remote backend sends it. On loopback the token is optional; on any other address the server refuses to
start without one (or with a placeholder or one shorter than 16 characters). The model loads before the port
opens. Every answer carries the inference queue's depth (model calls running + waiting) in
``X-Sieve-Queue-Depth``, and ``/ready`` says it as ``queue_depth``: the API's pool of rerank servers
(``RERANK_URLS``) sends each call to the least loaded one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors, metrics, process
from api.errors import ApiError
from api.limits import Admission
from api.principal import UNAUTHORIZED
from api.routes import ops, rerank
from api.serving import MODEL_ROUTES, ModelsDep, ServingDep, inference_gate, make_serving
from api.settings import GENERATE, ApiSettings, UnsafeSettingsError, is_loopback, weak_secret
from api.snapshot import ModelRegistry, ModelSnapshot
from reranking import Reranker, RerankError, RerankSettings, make_reranker
from reranking.backends.remote import QUEUE_DEPTH_HEADER

logger = logging.getLogger(__name__)

SERVICE = "sieve-rerank-server"


@dataclass
class RerankServerSettings:
    api: ApiSettings = field(default_factory=ApiSettings)
    rerank: RerankSettings = field(default_factory=RerankSettings)
    host: str = "127.0.0.1"  # the address it listens on (``sieve rerank-server --host``)


def check_exposure(settings: RerankServerSettings) -> None:
    """Refuse to listen on a non-loopback address without a strong ``RERANK_SERVER_TOKEN``."""
    if is_loopback(settings.host):
        return
    token = settings.rerank.server_token
    why = "is not set" if not token else weak_secret(token)
    if why:
        raise UnsafeSettingsError(
            f"refusing to serve the rerank server on {settings.host}: RERANK_SERVER_TOKEN {why}; {GENERATE} "
            "and give the API the same RERANK_SERVER_TOKEN (or bind to 127.0.0.1)"
        )


def token_check(token: str) -> Any:
    """A dependency: 401 unless the request carries ``Authorization: Bearer <token>``."""

    async def require_token(request: Request) -> None:
        presented = request.headers.get("authorization", "")
        scheme, _, value = presented.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(
                401,
                "this rerank server needs its token: send 'Authorization: Bearer <RERANK_SERVER_TOKEN>'",
                headers=UNAUTHORIZED,
            )

    return require_token


def queue_depth(queue: Admission) -> int:
    return queue.running + queue.waiting


class QueueDepthHeader:
    """Pure ASGI middleware: ``X-Sieve-Queue-Depth`` on every answer (a 429 at the door included), read
    from the inference queue when the answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                queue = inference_gate(scope.get("state") or {})
                if queue is not None:
                    MutableHeaders(scope=message).append(QUEUE_DEPTH_HEADER, str(queue_depth(queue)))
            await send(message)

        await self.app(scope, receive, sending)


def create_rerank_app(
    settings: RerankServerSettings | None = None, *, reranker: Reranker | None = None
) -> FastAPI:
    """The rerank server; ``reranker`` (tests) replaces the one ``RERANK_*`` describes."""
    settings = settings or RerankServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            check_exposure(settings)
        except UnsafeSettingsError as exc:
            logger.error("%s", exc)
            raise
        model = reranker
        if model is None:
            if settings.rerank.backend.lower() == "remote":
                raise RerankError("a rerank server cannot use RERANK_BACKEND=remote: name a local backend")
            model = make_reranker(settings.rerank)
        await run_in_threadpool(model.warm_up)
        process.gil_switch(settings.api)  # the engine's batcher shares the GIL with the requests' threads
        process.freeze_startup_heap()
        logger.info("rerank server ready: %s", model.name)
        models = ModelRegistry(ModelSnapshot(reranker=model, rerank=settings.rerank))
        yield {"serving": make_serving(SERVICE, settings.api, models)}

    app = FastAPI(title="Sieve rerank server", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    errors.limit_body(app, settings.api.json_body_cap())
    errors.shed_when_full(app, dict.fromkeys(MODEL_ROUTES, inference_gate))
    metrics.instrument(app)
    app.add_middleware(QueueDepthHeader)  # the outermost: every answer says the depth

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    async def ready(serving: ServingDep, models: ModelsDep) -> dict[str, Any]:  # async: no thread needed
        return {
            "ready": True,
            "checks": {"reranker": models.reranker.name},
            "queue_depth": queue_depth(serving.queue),
        }

    token = settings.rerank.server_token
    guarded = [Depends(token_check(token))] if token else []
    app.include_router(rerank.router, dependencies=guarded)
    app.include_router(ops.router, dependencies=guarded)
    return app
