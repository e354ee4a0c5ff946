"""Prometheus metrics of the API and the rerank server, served at ``GET /metrics``.

Every metric is a module-level object on the default registry (with the process collectors), so any module
can count with ``from api import metrics; metrics.DEGRADED.labels(reason="timeout").inc()``. Names start with
``sieve_``; times are seconds.

| metric | type | labels | counts |
| --- | --- | --- | --- |
| ``sieve_http_requests_total`` | counter | method, route, status | answered requests |
| ``sieve_http_request_seconds`` | histogram | method, route | time to answer |
| ``sieve_stage_seconds`` | histogram | stage | embed, stage1, filter, rerank; rerank_call, embed_call |
| ``sieve_batch_size`` | histogram | kind | items in one model call: rerank (documents), embed (inputs) |
| ``sieve_inference_queue_depth`` | gauge | | requests waiting for an inference slot |
| ``sieve_inference_inflight`` | gauge | | model calls running |
| ``sieve_overloaded_total`` | counter | | requests refused with 429: the inference queue was full |
| ``sieve_search_queue_depth`` | gauge | | searches waiting for a search slot |
| ``sieve_search_inflight`` | gauge | | searches running |
| ``sieve_search_overloaded_total`` | counter | | searches refused with 429: the search queue was full |
| ``sieve_degraded_total`` | counter | reason | stage-1 answers: timeout, unavailable, overloaded, error |
| ``sieve_low_confidence_total`` | counter | | searches flagged for review (low best score / spread) |
| ``sieve_search_cache_total`` | counter | result | search cache lookups: hit, miss |
| ``sieve_engine_batches_total`` | counter | model | batches the inference engine ran (reranker, embedder) |
| ``sieve_engine_requests_total`` | counter | model | request parts in those batches (a split one: twice) |
| ``sieve_engine_sequences_total`` | counter | model | sequences scored or embedded |
| ``sieve_engine_tokens_total`` | counter | model, kind | tokens: computed (a shared prefix once), served |
| ``sieve_engine_device_seconds_total`` | counter | model | the device's time on batches (rate: busy share) |
| ``sieve_rerank_pool_server_up`` | gauge | server | 1 while a server of ``RERANK_URLS`` is in, 0 out |
| ``sieve_rerank_pool_inflight`` | gauge | server | rerank calls this API has in flight on the server |
| ``sieve_rerank_pool_queue_depth`` | gauge | server | the server's inference queue, as it last reported it |
| ``sieve_rerank_pool_calls_total`` | counter | server, outcome | ok, failed, overloaded, refused |
| ``sieve_rerank_pool_retries_total`` | counter | | pool calls sent on to a second server |

The ``sieve_engine_*`` metrics are read from the engine's own counters when ``/metrics`` is scraped, for each
model served by the engine (``RERANK_BACKEND=qwen3-engine``, ``RETRIEVAL_EMBEDDER=qwen3-engine``); a model
swapped in starts from zero, as a restarted process would. ``rate(sieve_engine_device_seconds_total)`` is
the share of time the device had a batch (1.0: it never waited for the host between batches).

The ``sieve_rerank_pool_*`` metrics are defined beside the pool (``reranking.backends.pool``: ``reranking``
does not import ``api``) on the same registry; they appear once ``RERANK_URLS`` names two or more servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("sieve_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "sieve_http_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "sieve_stage_seconds", "Time spent in one stage of a request", ["stage"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("sieve_batch_size", "Items in one model call", ["kind"], buckets=SIZE_BUCKETS)
QUEUE_DEPTH = Gauge("sieve_inference_queue_depth", "Requests waiting for an inference slot")
INFLIGHT = Gauge("sieve_inference_inflight", "Model calls running")
OVERLOADED = Counter("sieve_overloaded", "Requests refused with 429 because the inference queue was full")
SEARCH_QUEUE_DEPTH = Gauge("sieve_search_queue_depth", "Searches waiting for a search slot")
SEARCH_INFLIGHT = Gauge("sieve_search_inflight", "Searches running")
SEARCH_OVERLOADED = Counter(
    "sieve_search_overloaded", "Searches refused with 429 because the search queue was full"
)
DEGRADED = Counter(
    "sieve_degraded", "Searches answered in stage-1 order because the rerank stage failed", ["reason"]
)
LOW_CONFIDENCE = Counter("sieve_low_confidence", "Searches flagged as low-confidence (sent to review)")
SEARCH_CACHE = Counter("sieve_search_cache", "Search cache lookups by result: hit, miss", ["result"])


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


class EngineCounters(Collector):
    """``sieve_engine_*``: the counters of the engines behind the models being scraped (``render``)."""

    def __init__(self) -> None:
        self.models: Mapping[str, Any] = {}  # model kind -> its engine's stats (``EngineStats``)

    def collect(self) -> Iterator[Metric]:
        families = {
            "batches": CounterMetricFamily(
                "sieve_engine_batches", "Batches the inference engine ran", labels=["model"]
            ),
            "requests": CounterMetricFamily(
                "sieve_engine_requests", "Request parts in the engine's batches", labels=["model"]
            ),
            "sequences": CounterMetricFamily(
                "sieve_engine_sequences", "Sequences the engine scored or embedded", labels=["model"]
            ),
            "device_seconds": CounterMetricFamily(
                "sieve_engine_device_seconds", "The device's time on the engine's batches", labels=["model"]
            ),
        }
        tokens = CounterMetricFamily(
            "sieve_engine_tokens",
            "Tokens through the engine: computed (a shared prefix once per batch) and served (as submitted)",
            labels=["model", "kind"],
        )
        for model, stats in self.models.items():
            for name, family in families.items():
                family.add_metric([model], float(getattr(stats, name)))
            tokens.add_metric([model, "computed"], float(stats.tokens))
            tokens.add_metric([model, "served"], float(stats.served_tokens))
        yield from families.values()
        yield tokens


ENGINES = EngineCounters()
REGISTRY.register(ENGINES)
_render_lock = threading.Lock()


def engine_stats(models: Mapping[str, object]) -> dict[str, Any]:
    """The engine counters of those ``models`` (kind -> backend) that are served by the engine."""
    found = {kind: getattr(backend, "engine_stats", None) for kind, backend in models.items()}
    return {kind: stats for kind, stats in found.items() if stats is not None}


def render(engines: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
    """The exposition text and its content type; ``engines``: kind -> engine stats (``engine_stats``)."""
    with _render_lock:
        ENGINES.models = engines or {}
        try:
            return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
        finally:
            ENGINES.models = {}


class Instrument:
    """Pure ASGI middleware: counts and times every request by its route template (``/v1/jobs/{job_id}``,
    not the raw path). No task or stream per request, unlike ``@app.middleware("http")``: it adds next to
    nothing to a request's time on the event loop, a fast 429 included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], route).observe(time.perf_counter() - started)


def instrument(app: FastAPI) -> None:
    """Count and time every request (``sieve_http_requests_total``, ``sieve_http_request_seconds``)."""
    app.add_middleware(Instrument)
