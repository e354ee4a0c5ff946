"""The web page (``GET /``, its files under ``/static/``) and two read-only routes it needs beyond the API:

- ``GET /v1/web/session``: who the key is (a tenant or the admin) and the low-confidence rules, so the page
  can say which kind of key signed in and mark a low-confidence answer as the review queue would.
- ``GET /v1/web/status``: the Celery workers that answer a ping, and the rerank gate of each tenant the caller
  may see (the admin: every tenant in ``API_KEYS``; a tenant: its own).

The page is plain HTML, CSS and JavaScript modules (no build step, nothing fetched from elsewhere): see
``api/static/README.md`` and the README's "The web page".
"""

from __future__ import annotations

import re
from importlib import resources as pkg_resources
from typing import Any, Protocol

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ResourcesDep
from api.errors import ApiError
from api.rerank_gate import gate_summary
from api.serving import ModelsDep

router = APIRouter(tags=["web"])

ASSET = re.compile(r"^[a-z0-9_-]{1,64}\.(js|css|svg|png)$")
TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "png": "image/png"}
# Everything the page loads is its own: a script injected through a passage's text could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
PING_TIMEOUT_S = 1.0


def _static(name: str) -> bytes:
    return pkg_resources.files("api").joinpath("static", name).read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(_static("index.html"), headers=HEADERS)


@router.get("/static/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    if not ASSET.match(name):
        raise ApiError(404, f"no file {name!r} in the web page's files")
    try:
        body = _static(name)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise ApiError(404, f"no file {name!r} in the web page's files") from exc
    return Response(body, media_type=TYPES[name.rsplit(".", 1)[1]], headers=HEADERS)


class Session(BaseModel):
    tenant: str | None = Field(description="The key's tenant; null for the admin key.")
    key_type: str = Field(description="tenant or admin")
    review_rules: dict[str, list[float]] = Field(
        description="API_REVIEW_RULES: per rerank backend, [best below, spread below] flags a search."
    )


@router.get("/v1/web/session", response_model=Session)
def session(caller: PrincipalDep, resources: ResourcesDep) -> Session:
    """The caller's key: 401 naming the problem when it is missing or unknown."""
    return Session(
        tenant=caller.tenant,
        key_type="admin" if caller.is_admin else "tenant",
        review_rules={k: list(v) for k, v in resources.settings.api.review_rules.items()},
    )


class _Pinger(Protocol):  # a Celery app: the task sender of ``Uploads``
    control: Any


class Workers(BaseModel):
    ok: bool
    names: list[str]
    error: str = ""


class WebStatus(BaseModel):
    workers: Workers
    gates: dict[str, dict[str, Any]] = Field(description="Per tenant: the rerank gate's mode and verdict.")


def ping_workers(sender: object) -> Workers:
    """The ingestion workers that answer a broadcast ping within ``PING_TIMEOUT_S``."""
    control = getattr(sender, "control", None)
    if control is None:
        return Workers(ok=False, names=[], error="this API does not send jobs through Celery")
    try:
        replies = control.ping(timeout=PING_TIMEOUT_S) or []
    except Exception as exc:  # noqa: BLE001 - broker down or a ping error: shown on the page, not raised
        return Workers(ok=False, names=[], error=f"could not ping workers: {exc}")
    names = sorted(name for reply in replies for name in reply)
    return Workers(ok=bool(names), names=names, error="" if names else "no worker answered a ping")


@router.get("/v1/web/status", response_model=WebStatus)
def status(caller: PrincipalDep, resources: ResourcesDep, models: ModelsDep) -> WebStatus:
    tenants = sorted(set(resources.settings.api.keys.values())) if caller.is_admin else [caller.tenant]
    gates: dict[str, dict[str, Any]] = {}
    if models.gate is not None:
        embedder = models.embedder.name if models.embedder is not None else None
        gates = {t: gate_summary(models.gate, t, embedder) for t in tenants if t is not None}
    return WebStatus(workers=ping_workers(resources.uploads.sender), gates=gates)
