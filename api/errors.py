"""The one place where exceptions become HTTP responses.

bad input 400/404/413/415/422, overloaded 429, not ready or a store down 503, anything else 500 with a
generic body and a correlation id (the exception is logged with it, never sent). 429 and 503 carry
``Retry-After``. The OpenAPI document describes 422 with this error body, the one clients get.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import Admission, LimitError, LimitExceededError, OverloadedError
from ingestion.errors import (
    BlobStoreUnavailableError,
    DocumentNotFoundError,
    DocumentTooLargeError,
    EmptyDocumentError,
    IngestError,
    ParseError,
    RedisUnavailableError,
    UnsupportedFormatError,
)
from ingestion.indexes import ReindexBusyError
from reranking.errors import RerankError, RerankInputError, RerankOverloadedError, RerankUnavailableError
from retrieval.errors import (
    EmbedderInputError,
    EmbedderMismatchError,
    EmbedderOverloadedError,
    EmbedderUnavailableError,
    InvalidFilterError,
    ModelLoadError,
    RetrievalError,
    StoreUnavailableError,
    UnsupportedSearchError,
)

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API raises itself, with its status code."""

    def __init__(self, status_code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


STATUS: list[tuple[type[BaseException], int]] = [
    (InvalidFilterError, 400),
    (UnsupportedSearchError, 400),
    (DocumentNotFoundError, 404),
    (ReindexBusyError, 409),
    (DocumentTooLargeError, 413),
    (UnsupportedFormatError, 415),
    (ParseError, 422),
    (EmptyDocumentError, 422),
    (RerankInputError, 400),
    (EmbedderInputError, 400),
    (LimitExceededError, 413),
    (OverloadedError, 429),
    (RerankOverloadedError, 429),
    (EmbedderOverloadedError, 429),
    (StoreUnavailableError, 503),
    (EmbedderMismatchError, 503),
    (ModelLoadError, 503),
    (RedisUnavailableError, 503),
    (BlobStoreUnavailableError, 503),
    (RerankUnavailableError, 503),
    (EmbedderUnavailableError, 503),
]


def status_for(exc: BaseException) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_body(status: int, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"status": status, "message": message, **extra}}


def retry_headers(exc: BaseException, status: int) -> dict[str, str] | None:
    """``Retry-After`` for 429 and 503: the seconds an ``OverloadedError`` names, else one; none for a
    permanent condition (an error whose ``retry_after_s`` is None, e.g. no reranker configured)."""
    if status not in (429, 503):
        return None
    seconds = getattr(exc, "retry_after_s", 1)
    return None if seconds is None else {"Retry-After": str(seconds)}


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
                "correlation_id": {"type": "string"},
            },
        }
    },
}


def _document_errors(app: FastAPI) -> None:
    """FastAPI documents 422 as ``{detail: [...]}``; describe the body the handlers below really send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = ERROR_SCHEMA
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign] # FastAPI's documented way to customise the schema


def install(app: FastAPI) -> None:
    _document_errors(app)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers or retry_headers(exc, exc.status_code)
        return JSONResponse(error_body(exc.status_code, exc.message), exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems) or "invalid request"
        return JSONResponse(error_body(422, summary, problems=problems), 422)

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            return await _unexpected(request, exc)
        return JSONResponse(error_body(status, str(exc)), status, headers=retry_headers(exc, status))

    for kind in (RetrievalError, IngestError, RerankError, LimitError):
        app.add_exception_handler(kind, _known)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        correlation = uuid.uuid4().hex[:12]
        logger.error(
            "unhandled error %s on %s %s", correlation, request.method, request.url.path, exc_info=exc
        )
        body = error_body(500, "internal error; quote this id when reporting it", correlation_id=correlation)
        return JSONResponse(body, 500)


CLOSE = {"Connection": "close"}  # the server stops reading the rest of the body and drops the connection


class BodyTooLargeError(StarletteHTTPException):
    """Raised from ``receive()`` once a streamed body passes its cap: an ``HTTPException``, so the framework
    lets it through its body parsing (which turns other exceptions into 400) to the handler above."""

    def __init__(self, received: int, cap: int, setting: str) -> None:
        super().__init__(
            413,
            f"request body passed the limit of {cap} bytes ({setting}) after {received} bytes",
            headers=CLOSE,
        )


Cap = tuple[int, str]  # bytes (0: none) and the setting that sets them


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over its cap, without buffering it.

    A declared ``Content-Length`` over the cap is answered before a byte of the body is read; otherwise the
    bytes are counted as ``receive()`` yields them (a chunked body declares no length) and the request ends
    with 413 as soon as the count passes the cap, so memory stays flat whatever is sent. ``routes`` gives
    (method, path) pairs their own cap (uploads); every other request has ``default``.
    """

    def __init__(
        self, app: ASGIApp, *, default: Cap, routes: dict[tuple[str, str], Cap] | None = None
    ) -> None:
        self.app = app
        self.default = default
        self.routes = routes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, setting = self.routes.get((scope["method"], scope["path"]), self.default)
        if cap <= 0:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _reject(
                scope, send, f"request body is {declared} bytes; the limit is {cap} bytes ({setting})"
            )
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLargeError(received, cap, setting)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLargeError as exc:  # an app that let it escape: answer here if nothing was sent
            if started:
                raise
            await _reject(scope, send, exc.detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _reject(scope: Scope, send: Send, message: str) -> None:
    response = JSONResponse(error_body(413, message), 413, headers=CLOSE)
    await response(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


Gate = Callable[[Mapping[str, Any]], Admission | None]  # the lifespan's state -> a route's admission gate


class Shed:
    """Pure ASGI middleware, the front door of load shedding: 429 with ``Retry-After`` for a request whose
    route's admission gate is full right now (``Admission.shed``), before its body is read, its key checked or
    its JSON validated, so that refusing costs next to nothing while the box is saturated. Overload is
    answered before authentication, as a load balancer would. A request let in meets the gate itself."""

    def __init__(self, app: ASGIApp, *, gates: dict[tuple[str, str], Gate]) -> None:
        self.app = app
        self.gates = gates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        find = (
            self.gates.get((scope.get("method", ""), scope.get("path", "")))
            if scope["type"] == "http"
            else None
        )
        gate = find(scope.get("state") or {}) if find is not None else None
        refused = gate.shed() if gate is not None else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            error_body(429, str(refused)), 429, headers={"Retry-After": str(refused.retry_after_s)}
        )
        await response(scope, _nothing, send)


def shed_when_full(app: FastAPI, gates: dict[tuple[str, str], Gate]) -> None:
    """429 at the door for these (method, path) routes while their gate is full."""
    app.add_middleware(Shed, gates=gates)


def limit_body(app: FastAPI, default: Cap, routes: dict[tuple[str, str], Cap] | None = None) -> None:
    """Cap request bodies: ``default`` (bytes, setting) for every route, ``routes`` for some (uploads)."""
    app.add_middleware(BodyLimit, default=default, routes=routes)
