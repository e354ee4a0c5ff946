"""A small HTTP client for Sieve's API (used by the CLI and the integration tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx


class SieveClientError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class SieveClient:
    def __init__(
        self, url: str, api_key: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _check(self, response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise SieveClientError(response.status_code, message)

    def upload(
        self, paths: Iterable[Path], *, metadata: dict[str, Any] | None = None, document_id: str | None = None
    ) -> dict[str, Any]:
        files = [("files", (p.name, p.read_bytes())) for p in paths]
        data: dict[str, str] = {}
        if metadata:
            data["metadata"] = json.dumps(metadata)
        if document_id:
            data["document_id"] = document_id
        return dict(self._check(self._http.post("/v1/documents", files=files, data=data)))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._check(self._http.get(f"/v1/jobs/{job_id}")))

    def wait(
        self,
        job_ids: list[str],
        *,
        timeout: float = 600,
        on_progress: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        latest: dict[str, dict[str, Any]] = {}
        while True:
            # Ask again only about unfinished jobs, and less often when there are many.
            for job_id in job_ids:
                if latest.get(job_id, {}).get("state") not in ("done", "failed"):
                    latest[job_id] = self.job(job_id)
                    if latest[job_id]["state"] not in ("done", "failed"):
                        break  # jobs run roughly in order: the rest are not done either
            jobs = [
                latest.get(j, {"job_id": j, "state": "queued", "chunks_done": 0, "chunks_total": 0})
                for j in job_ids
            ]
            if on_progress:
                on_progress(jobs)
            if all(j["state"] in ("done", "failed") for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not finished after {timeout:.0f} s: {jobs}")
            time.sleep(0.25)

    def search(self, query: str, **params: Any) -> dict[str, Any]:
        return dict(self._check(self._http.post("/v1/search", json={"query": query, **params})))

    def documents(self) -> list[dict[str, Any]]:
        return list(self._check(self._http.get("/v1/documents")))

    def document(self, document_id: str) -> dict[str, Any]:
        return dict(self._check(self._http.get(_document_path(document_id))))

    def delete(self, document_id: str) -> dict[str, Any]:
        return dict(self._check(self._http.delete(_document_path(document_id))))

    def review_clusters(self, **params: Any) -> dict[str, Any]:
        """``GET /v1/review/clusters``: flagged queries grouped into recurring gaps (params: tenant, state,
        since, limit, threshold, min_size; None values are left out)."""
        query = {k: v for k, v in params.items() if v is not None}
        return dict(self._check(self._http.get("/v1/review/clusters", params=query)))

    def review_page(self, **params: Any) -> dict[str, Any]:
        """``GET /v1/review``: one page of flagged searches (params: tenant, state, since, cursor, limit)."""
        query = {k: v for k, v in params.items() if v is not None}
        return dict(self._check(self._http.get("/v1/review", params=query)))

    def review_label(self, item_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/review/{id}``: label an item (``chunk_ids``, ``indices`` or ``none``)."""
        return dict(self._check(self._http.post(f"/v1/review/{quote(item_id, safe='')}", json=body)))

    def review_export(self, **params: Any) -> str:
        """``GET /v1/review/export``: the labelled items as JSON lines of training pairs."""
        query = {k: v for k, v in params.items() if v is not None}
        response = self._http.get("/v1/review/export", params=query)
        if not response.is_success:
            self._check(response)
        return response.text

    def ready(self) -> dict[str, Any]:
        return dict(self._http.get("/ready").json())


def _document_path(document_id: str) -> str:
    """The route of one document: the id percent-encoded whole (``/`` too), so ``a/README.md``,
    ``a/../b`` or ``x?y#z`` reach the ``{document_id:path}`` route intact, never normalised by the URL."""
    return f"/v1/documents/{quote(document_id, safe='')}"
