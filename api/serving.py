"""What the model endpoints need, in the API and in the rerank server alike.

The compatible routes (``/v1/rerank``, ``/v1/embeddings``, ``/v1/similarity``) and ``/info`` take a
``Serving`` through ``ServingDep`` and the serving models through ``ModelsDep`` (one read of the registry per
request); each app's lifespan puts its ``Serving`` in its state under ``"serving"``. The rerank server has no
embedder, so its snapshot's ``embedder`` is None and the embedding routes are not mounted there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from api.errors import ApiError
from api.limits import Admission, inference_queue
from api.settings import ApiSettings
from api.snapshot import ModelRegistry, ModelSnapshot


@dataclass(frozen=True)
class Serving:
    service: str  # "sieve-api" or "sieve-rerank-server"
    api: ApiSettings
    queue: Admission  # the bounded inference queue in front of every model call
    models: ModelRegistry
    # The serving index and the rebuild in progress, for /info (the API's; the rerank server has none).
    index_status: Callable[[ModelSnapshot], dict[str, Any]] | None = None


def make_serving(
    service: str,
    api: ApiSettings,
    models: ModelRegistry,
    index_status: Callable[[ModelSnapshot], dict[str, Any]] | None = None,
) -> Serving:
    queue = inference_queue(
        api.inference_concurrency,
        api.inference_queue,
        timeout_s=api.inference_queue_timeout_s,
        retry_after_s=api.retry_after_s,
    )
    return Serving(service, api, queue, models, index_status)


# The model routes, behind the inference queue: shed at the door while it is full (``api.errors.Shed``).
MODEL_ROUTES = [
    ("POST", path)
    for path in ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/embeddings", "/v1/similarity", "/similarity")
]


def inference_gate(state: Mapping[str, Any]) -> Admission | None:
    """The inference queue, from the lifespan's state (None before it has run)."""
    serving = state.get("serving")
    return serving.queue if isinstance(serving, Serving) else None


async def get_serving(request: Request) -> Serving:  # async: never waits for a thread
    serving: Serving | None = getattr(request.state, "serving", None)
    if serving is None:
        raise ApiError(503, "the service is starting; try again shortly", headers={"Retry-After": "1"})
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def get_models(serving: ServingDep) -> ModelSnapshot:
    """The serving snapshot, read once per request."""
    return serving.models.current()


ModelsDep = Annotated[ModelSnapshot, Depends(get_models)]
