"""Model backends of the rerank stage (the only modules of ``reranking`` that import torch) and the factory.

``RERANKERS`` maps each ``RERANK_BACKEND`` name to a factory; a factory imports its backend only when it is
called, so importing this package loads no model library. ``qwen3`` is served by the inference engine on a
"cuda" device and by transformers elsewhere (same input, name and score scale); ``qwen3-engine`` and
``qwen3-transformers`` force one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from reranking.errors import RerankError
from reranking.reranker import NoneReranker, Reranker
from reranking.settings import RerankSettings

logger = logging.getLogger(__name__)
RerankerFactory = Callable[[RerankSettings], Reranker]
DEFAULT_QWEN3_MODEL = "Qwen/Qwen3-Reranker-0.6B"


def _none(settings: RerankSettings) -> Reranker:
    return NoneReranker()


def _cross_encoder(settings: RerankSettings) -> Reranker:
    from reranking.backends.cross_encoder import CrossEncoderReranker

    if not settings.model:
        raise RerankError("RERANK_MODEL must name a cross-encoder folder or hub id for backend=cross-encoder")
    return CrossEncoderReranker(
        model=settings.model,
        device=settings.device,
        max_tokens=settings.max_tokens or None,
        batch_size=settings.batch_size,
    )


def _maxsim(settings: RerankSettings) -> Reranker:
    from reranking.backends.maxsim import MaxSimReranker

    return MaxSimReranker(
        model=settings.model or None,
        device=settings.device,
        max_tokens=settings.max_tokens or None,
        batch_size=settings.batch_size,
    )


def _qwen3_transformers(settings: RerankSettings) -> Reranker:
    from reranking.backends.qwen3 import Qwen3Reranker

    return Qwen3Reranker(
        model=settings.model or DEFAULT_QWEN3_MODEL,
        device=settings.device,
        max_tokens=settings.max_tokens or None,
        batch_size=settings.batch_size,
        default_instruction=settings.instruction,
    )


def _qwen3_engine(settings: RerankSettings) -> Reranker:
    from reranking.backends.qwen3_engine import EngineReranker

    return EngineReranker(
        model=settings.model or DEFAULT_QWEN3_MODEL,
        device=settings.device,
        max_tokens=settings.max_tokens or None,
        default_instruction=settings.instruction,
        precision=settings.precision,
    )


def _qwen3(settings: RerankSettings) -> Reranker:
    on_gpu = settings.device.lower().startswith("cuda")
    if not on_gpu and settings.precision != "bf16":
        logger.warning(
            "RERANK_PRECISION=%s applies to the inference engine on a cuda device; qwen3 on %s runs through "
            "transformers in its own precision",
            settings.precision, settings.device,
        )  # fmt: skip
    return _qwen3_engine(settings) if on_gpu else _qwen3_transformers(settings)


def _remote(settings: RerankSettings) -> Reranker:
    """One rerank server (``RERANK_URL``): ``RemoteReranker``; several (``RERANK_URLS``): a pool of them."""
    urls = settings.server_urls()
    if not urls:
        raise RerankError(
            "RERANK_URL (one) or RERANK_URLS (several, comma-separated) must name the rerank server "
            "(http://host:port) for backend=remote"
        )
    if len(urls) == 1:
        from reranking.backends.remote import RemoteReranker

        return RemoteReranker(urls[0], timeout_s=settings.timeout_s, api_key=settings.server_token)
    from reranking.backends.pool import RerankerPool

    return RerankerPool.from_urls(
        urls,
        timeout_s=settings.timeout_s,
        api_key=settings.server_token,
        health_period_s=settings.health_period_s,
    )


RERANKERS: dict[str, RerankerFactory] = {
    "none": _none,
    "cross-encoder": _cross_encoder,
    "crossencoder": _cross_encoder,
    "maxsim": _maxsim,
    "qwen3": _qwen3,
    "qwen3-reranker": _qwen3,
    "qwen3-transformers": _qwen3_transformers,
    "qwen3-engine": _qwen3_engine,
    "engine": _qwen3_engine,
    "remote": _remote,
}


def make_reranker(settings: RerankSettings | None = None) -> Reranker:
    """The configured reranker, cheap to build (models load in ``warm_up``)."""
    settings = settings or RerankSettings()
    factory = RERANKERS.get(settings.backend.lower())
    if factory is None:
        raise RerankError(
            f"unknown rerank backend {settings.backend!r}: "
            "set RERANK_BACKEND to none, cross-encoder, maxsim, qwen3, qwen3-engine, qwen3-transformers "
            "or remote"
        )
    return factory(settings)


# The ways to turn stage 2 on, by their canonical RERANK_BACKEND value (each a key of RERANKERS).
STAGE2_OPTIONS: dict[str, str] = {
    "qwen3-engine": "a GPU, with RERANK_MODEL a Qwen3-Reranker folder",
    "cross-encoder": "on CPU, with RERANK_MODEL a cross-encoder folder",
    "remote": "a rerank server (`sieve rerank-server`), with RERANK_URL its address (RERANK_URLS: several)",
}


def stage2_howto() -> str:
    """One sentence saying how to turn stage 2 on, naming real ``RERANK_BACKEND`` values."""
    ways = "; ".join(f"RERANK_BACKEND={name} ({how})" for name, how in STAGE2_OPTIONS.items())
    return f"to turn stage 2 on, set {ways}, then restart the API (README: Turning stage 2 on)"
