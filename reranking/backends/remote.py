"""The rerank stage in another process: a Sieve rerank server's ``POST /v1/rerank`` (Cohere shape) over HTTP.

``sieve rerank-server`` serves a local backend (one process per GPU); the query API sets
``RERANK_BACKEND=remote`` and ``RERANK_URL`` to reach it, with ``RERANK_TIMEOUT_S`` as the deadline of a call
and ``RERANK_SERVER_TOKEN`` sent as ``Authorization: Bearer`` (the server's shared token).
Scores are the served backend's, unchanged; ``rank(..., windows=True)`` sends ``long_documents="windows"``
and reads each result's ``window`` (``"truncate"`` otherwise, whatever the server's default).
Errors: the server unreachable, too slow or failing (5xx) → ``RerankUnavailableError``, and so is a refused
token (401, 403: ``RERANK_SERVER_TOKEN`` differs); 429 → ``RerankOverloadedError``; a refused request (other
4xx) → ``RerankInputError`` with the server's message.
``/v1/search`` turns the first two into a degraded answer in stage-1 order. No torch here: only httpx.

A rerank server reports its inference queue (model calls running + waiting) in the ``X-Sieve-Queue-Depth``
header of every answer and as ``queue_depth`` in ``/ready``; ``reported_depth`` keeps the last figure, which
the pool of several servers (``reranking.backends.pool``, ``RERANK_URLS``) balances on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from reranking.errors import RerankInputError, RerankOverloadedError, RerankUnavailableError
from reranking.reranker import RankedHit, Window, check_rank_request

logger = logging.getLogger(__name__)

QUEUE_DEPTH_HEADER = "X-Sieve-Queue-Depth"


class RemoteReranker:
    """A ``Reranker`` whose model runs behind ``url`` (``http://host:port`` of a Sieve rerank server)."""

    reorders = True

    def __init__(
        self,
        url: str,
        timeout_s: float = 2.0,
        *,
        api_key: str = "",
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ValueError("RERANK_URL must be set for backend=remote (e.g. http://127.0.0.1:8101)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        # Sent with every call, also through a client passed in (tests: an in-process app), which keeps its
        # own timeouts.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout_s)
        self._owns_client = client is None
        self.served_model: str | None = None  # the server's model name, once it has answered
        self.reported_depth: int | None = None  # the server's queue depth, as it last reported it

    @property
    def name(self) -> str:
        return f"remote:{self.url}"

    @property
    def max_tokens(self) -> int | None:
        """None: the server applies its own model's budget."""
        return None

    @property
    def revision(self) -> str | None:
        """None: the model's revision is the server's to report."""
        return None

    def warm_up(self) -> None:
        """Nothing to load; says in the log whether the server answers (search degrades while it does not)."""
        try:
            self._client.get(f"{self.url}/ready", headers=self._headers).raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("rerank server %s is not ready yet: %s", self.url, exc)

    def probe(self) -> str | None:
        """Ask ``/ready`` (no token needed): None when the server is ready (``reported_depth`` is refreshed
        from its answer), else why not, in words."""
        try:
            response = self._client.get(f"{self.url}/ready", headers=self._headers)
        except httpx.HTTPError as exc:
            return f"/ready failed: {exc!r}"
        if response.status_code != 200:
            return f"/ready answered {response.status_code}: {_message(response)}"
        try:
            depth = response.json().get("queue_depth")
        except (ValueError, AttributeError):
            return "/ready sent no JSON body"
        if isinstance(depth, int) and depth >= 0:
            self.reported_depth = depth
        return None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        """``long_documents`` is always sent, so the server's ``RERANK_LONG_DOCUMENTS`` does not decide."""
        check_rank_request(query, top_k)
        if not documents or top_k == 0:
            return []
        body: dict[str, Any] = {
            "query": query,
            "documents": list(documents),
            "return_documents": False,
            "long_documents": "windows" if windows else "truncate",
        }
        if top_k is not None:
            body["top_n"] = top_k
        if instruction is not None:
            body["instruction"] = instruction
        payload = self._post(body)
        hits = self._hits(payload, documents, windows=windows)
        return hits if top_k is None else hits[:top_k]

    def _post(self, body: dict[str, Any]) -> Any:
        try:
            response = self._client.post(f"{self.url}/v1/rerank", json=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise RerankUnavailableError(
                f"the rerank server {self.url} did not answer within {self.timeout_s:g} s (RERANK_TIMEOUT_S)"
            ) from exc
        except httpx.HTTPError as exc:
            raise RerankUnavailableError(f"the rerank server {self.url} cannot be reached: {exc}") from exc
        self._read_depth(response)
        if response.status_code == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise RerankUnavailableError(f"the rerank server {self.url} sent no JSON body") from exc
        message = _message(response)
        if response.status_code == 429:
            raise RerankOverloadedError(f"the rerank server {self.url} is overloaded: {message}")
        if response.status_code in (401, 403):
            raise RerankUnavailableError(
                f"the rerank server {self.url} refused this API's token (RERANK_SERVER_TOKEN): {message}"
            )
        if 400 <= response.status_code < 500:
            raise RerankInputError(message)
        status = response.status_code
        raise RerankUnavailableError(f"the rerank server {self.url} answered {status}: {message}")

    def _read_depth(self, response: httpx.Response) -> None:
        value = response.headers.get(QUEUE_DEPTH_HEADER, "").strip()
        if value.isdigit():
            self.reported_depth = int(value)

    def _hits(self, payload: Any, documents: Sequence[str], *, windows: bool) -> list[RankedHit]:
        count = len(documents)
        try:
            results = payload["results"]
            hits = [
                RankedHit(
                    int(r["index"]),
                    float(r["relevance_score"]),
                    _window(r["window"]) if windows else None,
                )
                for r in results
            ]
        except (KeyError, TypeError, ValueError) as exc:
            why = " (a window missing or wrong: is the server older than long_documents?)" if windows else ""
            raise RerankUnavailableError(
                f"the rerank server {self.url} sent an unexpected body{why}"
            ) from exc
        if any(not 0 <= h.index < count for h in hits) or len({h.index for h in hits}) != len(hits):
            raise RerankUnavailableError(f"the rerank server {self.url} sent indices outside the documents")
        if any(h.window is not None and h.window.end > len(documents[h.index]) for h in hits):
            raise RerankUnavailableError(f"the rerank server {self.url} sent a window outside its document")
        if isinstance(payload.get("model"), str):
            self.served_model = payload["model"]
        return sorted(hits, key=lambda h: (-h.score, h.index))


def _window(raw: Any) -> Window:
    """A result's ``window`` object; ``ValueError`` (or ``KeyError``, ``TypeError``) unless it is one."""
    window = Window(int(raw["index"]), int(raw["count"]), int(raw["start"]), int(raw["end"]))
    if not (0 <= window.index < window.count and 0 <= window.start <= window.end):
        raise ValueError(f"not a window: {raw!r}")
    return window


def _message(response: httpx.Response) -> str:
    """The ``error.message`` of a Sieve error body, else the start of the body."""
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    except (ValueError, AttributeError):
        pass
    return response.text[:200] or response.reason_phrase
