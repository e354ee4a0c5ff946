"""Liveness and readiness (the web page is ``api.routes.web``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ResourcesDep
from api.serving import ModelsDep
from api.stack_state import ready_report

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    # async: answered on the event loop, never behind a saturated thread pool
    return {"status": "ok"}


@router.get("/ready")
def ready(resources: ResourcesDep, models: ModelsDep) -> JSONResponse:
    embedder, store, _ = models.search_models()
    checks: dict[str, str] = {}
    for name, probe in (("vector_store", store.ping), ("redis", resources.records.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - a health probe: any failure means not ready, reason shown
            checks[name] = f"unavailable: {exc}"
    checks["embedder"] = embedder.name
    checks["reranker"] = models.reranker.name
    ok = all(v == "ok" for k, v in checks.items() if k in ("vector_store", "redis"))
    body: dict[str, object] = {"ready": ok, "checks": checks}
    if (stack := ready_report()) is not None:  # under `sieve up`: its processes, restarts, last exits
        body["stack"] = stack
    return JSONResponse(body, status_code=200 if ok else 503)
