"""Settings of the API (environment prefix ``API_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # API key -> tenant id, as JSON in API_KEYS='{"key1": "tenant-a"}'. No key configured: every call is 401.
    keys: dict[str, str] = Field(default_factory=dict)
    max_request_bytes: int = 200 * 1024 * 1024
    # /v1/search: top_k and candidates when a request leaves them out; above max_candidates or with a query
    # longer than max_query_chars a request is answered 422 naming the field (0: no bound).
    default_top_k: int = 5
    default_candidates: int = 50
    max_candidates: int = 500
    max_query_chars: int = 4000
    # Compatible endpoints (/v1/rerank, /v1/embeddings, /v1/similarity): caps answered with 413 naming them.
    max_rerank_documents: int = 1000
    max_embedding_inputs: int = 2048
    max_tokens_per_doc: int = 4096  # rerank: longer documents are cut (or refused with truncate=false)
    # Bounded inference queue: this many model calls at once, this many waiting; past that 429 + Retry-After.
    inference_concurrency: int = 8
    inference_queue: int = 24
    inference_queue_timeout_s: float = 30.0
    retry_after_s: int = 1
    # /v1/search answers in stage-1 order (degraded) when stage 2 takes longer than this (0: no deadline).
    rerank_deadline_s: float = 10.0
    # The runtime rerank gate (api/rerank_gate.py): "evaluated" runs stage 2 for a tenant only when
    # `sieve eval --gate` showed that it helps there (a stored decision for the serving reranker); "always"
    # whenever a reranker is configured; "off" never.
    rerank_gate: Literal["evaluated", "always", "off"] = "evaluated"
    # The version of a document served while a newer one is being ingested can leave a few stale chunks
    # in the index for a moment; stage 1 fetches this many extra candidates so filtering them out still
    # leaves ``candidates`` results.
    stale_slack: int = 20

    # Search results are cached in Redis for this many seconds (0: no cache). An ingest or a delete bumps the
    # tenant's index version, so a cached result is never served after what it was computed from changed.
    cache_ttl_s: int = 300
    # How often the API checks whether a rebuilt index was switched in (one Redis GET, in a lifespan task;
    # 0: as often as every 0.05 s).
    index_poll_s: float = 2.0
    # Token bucket per tenant over every /v1 route: a steady rate and a burst (0 for either: no limit).
    # Per-tenant overrides as JSON in API_RATE_LIMITS='{"tenant-a": [200, 400]}'.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    rate_limits: dict[str, tuple[float, int]] = Field(default_factory=dict)
    # The key of the review routes across tenants (API_ADMIN_KEY); empty: no admin, tenants see their own.
    admin_key: str = ""
    # Low-confidence rule: a search is flagged for review when its best score is below the first number
    # and the spread of its hits' scores (best - worst) below the second. Scales differ per rerank backend
    # (the name before ':'); "none" (no rerank, or a degraded one) uses the cosine of stage 1's dense leg
    # (``dense_score``; a hybrid search's fused score has no fixed scale); "bm25", if set, searches found by
    # BM25 alone (unset: those are never flagged); "*" any other backend.
    review_rules: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "qwen3-reranker": (0.4, 0.1),
            "cross-encoder": (0.4, 0.1),
            "none": (0.3, 0.2),  # MiniLM on the sample: off-topic best <= 0.23, on-topic best >= 0.33
            "*": (0.4, 0.1),
        }
    )
    review_text_chars: int = 2000  # a candidate's text is kept up to this length in the review queue
