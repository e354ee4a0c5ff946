"""The one place where exceptions become HTTP responses.

bad input 400/404/413/415/422, overloaded 429, not ready or a store down 503, anything else 500 with a
generic body and a correlation id (the exception is logged with it, never sent). 429 and 503 carry
``Retry-After``. The OpenAPI document describes 422 with this error body, the one clients get.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.limits import LimitError, LimitExceededError, OverloadedError
from ingestion.errors import (
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
    """``Retry-After`` for 429 and 503: the seconds an ``OverloadedError`` names, else one."""
    if status not in (429, 503):
        return None
    return {"Retry-After": str(getattr(exc, "retry_after_s", 1))}


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


def limit_body(app: FastAPI, max_bytes: int) -> None:
    """413 for a request whose declared ``Content-Length`` passes ``max_bytes`` (API_MAX_REQUEST_BYTES)."""

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            body = error_body(413, f"request body is {length} bytes; the limit is {max_bytes}")
            return JSONResponse(body, 413)
        return await call_next(request)
