"""``sieve reindex`` and ``sieve reload``: swap a trained model in without downtime (they call the admin
routes of a running API, ``api.routes.admin``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import typer

from api.cli.common import UrlOpt, console, stack_file, stored_key

AdminKeyOpt = Annotated[
    str, typer.Option(envvar="API_ADMIN_KEY", help="The admin key (default: the embedded stack's)")
]


def _admin(url: str, key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if not key:
        key = stored_key("admin_key") or ""
        if not key:
            raise typer.BadParameter(
                "no admin key: pass --key, set API_ADMIN_KEY, or start `sieve up` first "
                f"(no key in {stack_file('admin_key')})"
            )
    response = httpx.request(
        method, f"{url.rstrip('/')}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=600
    )
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]{response.status_code}: {message}[/]")
        raise typer.Exit(1)
    return response.json()


def _show(status: dict[str, Any]) -> None:
    serving = status.get("serving", {})
    model = serving.get("embedder_model", "")
    console.print(f"serving: {serving.get('collection')} ({serving.get('embedder')} {model})")
    if "previous" in status:
        console.print(f"previous (kept until --drop-old): {status['previous'].get('collection')}")
    build = status.get("rebuild")
    if build:
        done = f"{build['documents_done']}/{build['documents_total']}"
        console.print(
            f"rebuild {build['collection']}: {build['state']}, {done} documents, {build['chunks']} chunks, "
            f"{build['documents_failed']} failed" + (f" ({build['error']})" if build.get("error") else "")
        )


def reindex(
    embedder_model: Annotated[
        str | None, typer.Option(help="The new embedder: a model folder (e.g. from `sieve train`) or hub id")
    ] = None,
    embedder: Annotated[str | None, typer.Option(help="Embedder kind (default: the serving one's)")] = None,
    status: Annotated[bool, typer.Option("--status", help="Show the serving index and the rebuild")] = False,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Drop the index that served before")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the rebuild until it switches or fails")] = True,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: AdminKeyOpt = "",
) -> None:
    """Build an index with a new embedder beside the serving one; search switches to it when complete."""
    if drop_old:
        result = _admin(url, key, "POST", "/v1/admin/reindex/drop-old")
        console.print(f"dropped: {result['dropped']}")
        return
    if status or not embedder_model:
        _show(_admin(url, key, "GET", "/v1/admin/reindex"))
        return
    body = {"embedder_model": embedder_model, "embedder": embedder}
    current = _admin(url, key, "POST", "/v1/admin/reindex", body)
    build_id = current["rebuild"]["id"]
    while wait and current.get("rebuild", {}).get("id") == build_id:
        _show(current)
        if current["rebuild"]["state"] in ("switched", "failed"):
            if current["rebuild"]["state"] == "failed":
                raise typer.Exit(1)
            return
        time.sleep(2)
        current = _admin(url, key, "GET", "/v1/admin/reindex")


def reload(
    rerank_model: Annotated[
        str | None, typer.Option(help="Default: RERANK_MODEL of the API, read again")
    ] = None,
    rerank_backend: Annotated[str | None, typer.Option(help="Default: RERANK_BACKEND, read again")] = None,
    embedder_model: Annotated[
        str | None, typer.Option(help="Reload the query embedder too (same name as the index's builder)")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: AdminKeyOpt = "",
) -> None:
    """Load a new reranker while the old one serves, then swap it in."""
    body = {"rerank_model": rerank_model, "rerank_backend": rerank_backend, "embedder_model": embedder_model}
    result = _admin(url, key, "POST", "/v1/admin/reload", body)
    for component, name in result["reloaded"].items():
        console.print(f"{component}: {name}")
