"""The body cap counts streamed bytes: a chunked body (no Content-Length) is answered 413 as soon as it passes
the cap, without reading the rest; a declared length over the cap before a byte is read; uploads have their
own cap (API_MAX_REQUEST_BYTES) above the one of JSON bodies (API_MAX_JSON_BYTES)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from api.app import create_app
from api.errors import BodyLimit
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH

JSON_CAP = 4096
UPLOAD_CAP = 64 * 1024
CHUNK = 512


class Chunks:
    """A request body as ``count`` chunks of ``CHUNK`` bytes inside a JSON search request; counts what the
    server pulled."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += 1
        yield b'{"query": "'
        for _ in range(self.count):
            self.pulled += 1
            yield b"bees " * (CHUNK // 5)
        self.pulled += 1
        yield b'"}'


def with_state(app: FastAPI, state: dict[str, Any]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """What a server does with the lifespan's state: a copy in every request's scope."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def api_client(ingest: IngestSettings, **api: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API on fakes, lifespan run, reached through httpx's ASGI transport (which streams a body to the
    app's ``receive()`` chunk by chunk, as a server does)."""
    settings = harness.settings(
        ingest, **{"max_json_bytes": JSON_CAP, "max_request_bytes": UPLOAD_CAP, **api}
    )
    app = create_app(settings, resources_factory=harness.resources_factory(None))
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=with_state(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def post_search(ingest: IngestSettings, body: Chunks, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with api_client(ingest) as client:
            return await client.post(
                "/v1/search",
                content=body,
                headers={**AUTH, "Content-Type": "application/json", **headers},
            )

    return asyncio.run(go())


def test_a_chunked_body_over_the_cap_is_413_without_reading_the_rest(ingest_settings: IngestSettings) -> None:
    body = Chunks(10_000)  # 5 MB, no Content-Length
    r = post_search(ingest_settings, body)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["status"] == 413
    assert "API_MAX_JSON_BYTES" in r.json()["error"]["message"]
    assert r.headers["Connection"] == "close"
    assert body.pulled <= JSON_CAP // CHUNK + 3  # stopped at the cap: the rest was never read


def test_a_chunked_body_under_the_cap_is_served(ingest_settings: IngestSettings) -> None:
    r = post_search(ingest_settings, Chunks(4))
    assert r.status_code == 200, r.text
    assert r.json()["query"].startswith("bees")


def test_a_declared_length_over_the_cap_is_413_before_the_body_is_read(
    ingest_settings: IngestSettings,
) -> None:
    body = Chunks(10_000)
    r = post_search(ingest_settings, body, **{"Content-Length": str(10_000 * CHUNK)})
    assert r.status_code == 413 and "API_MAX_JSON_BYTES" in r.json()["error"]["message"]
    assert body.pulled == 0


def test_uploads_have_their_own_cap(ingest_settings: IngestSettings) -> None:
    def multipart(size: int) -> tuple[bytes, str]:
        boundary = "sieve-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        return head + b"bees dance " * (size // 11) + f"\r\n--{boundary}--\r\n".encode(), boundary

    async def upload(size: int) -> httpx.Response:
        data, boundary = multipart(size)

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the count decides
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]

        async with api_client(ingest_settings) as client:
            return await client.post(
                "/v1/documents",
                content=chunked(),
                headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )

    accepted = asyncio.run(upload(JSON_CAP * 4))  # over the JSON cap, under the upload cap
    assert accepted.status_code == 202, accepted.text
    refused = asyncio.run(upload(UPLOAD_CAP * 2))
    assert refused.status_code == 413 and "API_MAX_REQUEST_BYTES" in refused.json()["error"]["message"]


def test_the_json_cap_never_exceeds_the_request_cap(ingest_settings: IngestSettings) -> None:
    async def go() -> httpx.Response:
        async with api_client(ingest_settings, max_json_bytes=10**9, max_request_bytes=1000) as client:
            return await client.post("/v1/search", content=Chunks(10), headers=AUTH)

    r = asyncio.run(go())
    assert r.status_code == 413 and "limit of 1000 bytes (API_MAX_REQUEST_BYTES)" in r.text


def test_the_middleware_answers_when_the_app_lets_the_error_escape() -> None:
    """An ASGI app that reads its body without a framework (no exception handler) still gets a 413."""

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    app = BodyLimit(raw, default=(1000, "API_MAX_JSON_BYTES"))

    async def go() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 100

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/", content=body())

    r = asyncio.run(go())
    assert r.status_code == 413 and json.loads(r.text)["error"]["message"].endswith(
        "(API_MAX_JSON_BYTES) after 1100 bytes"
    )
