"""Settings of the API (environment prefix ``API_``), and the check that refuses to expose weak secrets.

``check_exposure(api, host)`` raises ``UnsafeSettingsError`` (one line naming the setting) when the API is to
listen on an address other than loopback while a key in ``API_KEYS`` or ``API_ADMIN_KEY`` is a placeholder
(``changeme``, ``admin``, ``secret``, ``test``, ...) or shorter than ``MIN_SECRET_CHARS``; ``weak_secret`` is
the same test for other shared secrets (the rerank server's ``RERANK_SERVER_TOKEN``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # API key -> tenant id, as JSON in API_KEYS='{"key1": "tenant-a"}'. No key configured: every call is 401.
    keys: dict[str, str] = Field(default_factory=dict)
    # Request bodies: an upload (POST /v1/documents, multipart, spooled to disk) up to max_request_bytes; any
    # other body (JSON, parsed in memory) up to max_json_bytes (and never above max_request_bytes). Counted as
    # the bytes arrive, also for a chunked body without Content-Length: past the cap, 413 naming the setting.
    max_request_bytes: int = 200 * 1024 * 1024
    max_json_bytes: int = 16 * 1024 * 1024
    # /v1/search: top_k and candidates when a request leaves them out; above max_candidates or with a query
    # longer than max_query_chars a request is answered 422 naming the field (0: no bound).
    default_top_k: int = 5
    default_candidates: int = 50
    max_candidates: int = 500
    max_query_chars: int = 4000  # also the query of the rerank routes
    # A rerank document, an embedding input or a similarity sentence longer than this: 422 naming it (0: no
    # bound). Token limits cut what is kept (truncate); this bounds what is read at all.
    max_input_chars: int = 100_000
    # Compatible endpoints (/v1/rerank, /v1/embeddings, /v1/similarity): caps answered with 413 naming them.
    max_rerank_documents: int = 1000
    max_embedding_inputs: int = 2048
    max_tokens_per_doc: int = 4096  # rerank: longer documents are cut (or refused with truncate=false)
    # Bounded inference queue: this many model calls at once, this many waiting; past that 429 + Retry-After.
    inference_concurrency: int = 8
    inference_queue: int = 24
    inference_queue_timeout_s: float = 30.0
    retry_after_s: int = 1
    # Admission of /v1/search (api/limits.py): this many searches run at once (each holds a thread of the
    # pool while it runs; default: the CPUs, at least 2), this many more wait (default: as many), each at most
    # search_queue_timeout_s; past that 429 + Retry-After, decided on the event loop, and while both are full
    # at the door, before the body or the key is read. The per-tenant rate limit below shares a box among
    # tenants; these bounds are what protect the box.
    search_concurrency: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=1)
    search_queue: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2), ge=0)
    search_queue_timeout_s: float = 1.5
    # CPU cores of the API process (engine/cpu.py): each concurrent search embeds its query on torch threads;
    # torch_threads per operator (0: the cores divided by search_concurrency, at least 1), so that concurrent
    # searches do not ask for more cores than there are. gil_switch_ms: how long a thread running Python keeps
    # the GIL while another (the event loop that answers 429s and /health) waits (0: Python's 5 ms).
    torch_threads: int = Field(default=0, ge=0)
    gil_switch_ms: float = Field(default=0.5, ge=0)
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

    def json_body_cap(self) -> tuple[int, str]:
        """The cap of a request body other than an upload, and the setting that sets it (0: none)."""
        caps = [
            (n, s)
            for n, s in (
                (self.max_json_bytes, "API_MAX_JSON_BYTES"),
                (self.max_request_bytes, "API_MAX_REQUEST_BYTES"),
            )
            if n > 0
        ]
        return min(caps) if caps else (0, "")

    def upload_body_cap(self) -> tuple[int, str]:
        return self.max_request_bytes, "API_MAX_REQUEST_BYTES"


# -- exposure ------------------------------------------------------------------------------------------------
MIN_SECRET_CHARS = 16
PLACEHOLDERS = frozenset(
    {
        "admin",
        "administrator",
        "apikey",
        "changeit",
        "changeme",
        "default",
        "demo",
        "dev",
        "dummy",
        "example",
        "guest",
        "key",
        "letmein",
        "pass",
        "passwd",
        "password",
        "placeholder",
        "qwerty",
        "root",
        "sample",
        "secret",
        "sieve",
        "test",
        "testing",
        "todo",
        "token",
        "user",
        "xxx",
    }
)
PLACEHOLDER_PARTS = (
    "changeme",
    "placeholder",
    "yourkey",
    "yourapikey",
    "yoursecret",
    "example",
    "secret",
    "password",
)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for 0.0.0.0, :: and others."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def weak_secret(value: str) -> str | None:
    """Why ``value`` is not fit to guard a service reachable from the network, or None when it is."""
    if len(value) < MIN_SECRET_CHARS:
        return f"is {len(value)} characters long (at least {MIN_SECRET_CHARS})"
    letters = re.sub(r"[^a-z]", "", value.lower())
    if not letters or letters in PLACEHOLDERS or any(part in letters for part in PLACEHOLDER_PARTS):
        return "is a placeholder"
    if len(set(value)) < 5:
        return "repeats too few characters"
    return None


class UnsafeSettingsError(ValueError):
    """The settings expose a weak secret on a non-loopback address."""


GENERATE = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def check_exposure(api: ApiSettings, host: str) -> None:
    """Refuse to serve on a non-loopback ``host`` with a placeholder or short API or admin key."""
    if is_loopback(host):
        return
    for key, tenant in api.keys.items():
        why = weak_secret(key)
        if why:
            raise UnsafeSettingsError(
                f"refusing to serve on {host}: the key of tenant {tenant!r} in API_KEYS {why}; {GENERATE} "
                "(or bind to 127.0.0.1)"
            )
    if api.admin_key:
        why = weak_secret(api.admin_key)
        if why:
            raise UnsafeSettingsError(
                f"refusing to serve on {host}: API_ADMIN_KEY {why}; {GENERATE} (or bind to 127.0.0.1)"
            )
