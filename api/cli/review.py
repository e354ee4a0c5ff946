"""``sieve review list|label|export|clusters``: the review queue of low-confidence searches from a shell.

``list`` merges repeated queries (same tenant, same query text, ignoring case and spacing) into one row with
a count and the last time it was seen; ``label`` labels one item; ``export`` writes the labelled items as
training pairs; ``clusters`` groups the flagged queries into recurring gaps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.cli.common import UrlOpt, client, console

review_app = typer.Typer(help="The review queue of low-confidence searches.", no_args_is_help=True)
KeyOpt = Annotated[
    str, typer.Option(envvar="SIEVE_API_KEY", help="A tenant's or the admin's API key (default: the stack's)")
]


def clusters_table(result: dict[str, Any]) -> Table:
    """The clusters as a table: size, labelled share, mean best score, typical queries."""
    table = Table("#", "size", "labelled", "best", "typical queries", show_lines=True)
    groups = [*result["clusters"], *([result["unclustered"]] if result["unclustered"] else [])]
    for group in groups:
        table.add_row(
            str(group["id"]) if group["id"] else "unclustered",
            str(group["size"]),
            f"{group['labelled_share']:.0%}",
            f"{group['mean_best']:.3f}",
            "\n".join(group["typical"]),
        )
    return table


@review_app.command("clusters")
def clusters(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (the admin key: any tenant)")] = None,
    state: Annotated[str, typer.Option(help="pending, labelled or all")] = "all",
    since: Annotated[float | None, typer.Option(help="Only items flagged from this time (epoch s)")] = None,
    limit: Annotated[int, typer.Option(help="Cluster the N most recent items")] = 2000,
    threshold: Annotated[
        float | None, typer.Option(help="Cosine distance below which queries join (default: the API's)")
    ] = None,
    min_size: Annotated[int, typer.Option(help="Smaller clusters are listed as unclustered")] = 2,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Flagged queries grouped into recurring gaps, largest first."""
    result = client(url, key).review_clusters(
        tenant=tenant, state=state, since=since, limit=limit, threshold=threshold, min_size=min_size
    )
    console.print(clusters_table(result))
    note = " (older items left out: raise --limit)" if result["truncated"] else ""
    console.print(
        f"{result['items']} flagged searches, {len(result['clusters'])} clusters at distance "
        f"{result['threshold']:g} · {result['embedder']}{note}"
    )


def merge_repeats(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (tenant, query) -- the query compared ignoring case and spacing -- with ``count``,
    ``last_seen`` (the newest ``created_at``), ``pending`` (how many are unlabelled) and ``latest_id`` (the
    newest item's id); most frequent first, then most recent."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        key = (item["tenant"], " ".join(item["query"].split()).casefold())
        row = rows.setdefault(
            key,
            {"tenant": item["tenant"], "query": item["query"], "count": 0, "pending": 0, "last_seen": 0.0},
        )
        row["count"] += 1
        row["pending"] += item.get("label") is None
        if item["created_at"] >= row["last_seen"]:
            row.update(last_seen=item["created_at"], latest_id=item["id"], best=item["best"])
    return sorted(rows.values(), key=lambda r: (-r["count"], -r["last_seen"]))


@review_app.command("list")
def list_items(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (the admin key: any tenant)")] = None,
    state: Annotated[str | None, typer.Option(help="pending or labelled (default: both)")] = None,
    since: Annotated[float | None, typer.Option(help="Only items flagged from this time (epoch s)")] = None,
    limit: Annotated[int, typer.Option(help="Read at most N items")] = 1000,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Flagged searches, one row per repeated query with its count and when it was last seen."""
    api = client(url, key)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        page = api.review_page(tenant=tenant, state=state, since=since, cursor=cursor, limit=min(500, limit))
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    rows = merge_repeats(items[:limit])
    table = Table("count", "pending", "last seen (UTC)", "best", "tenant", "query", "latest item id")
    for row in rows:
        seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["last_seen"]))
        table.add_row(
            str(row["count"]),
            str(row["pending"]),
            seen,
            f"{row['best']:.3f}",
            row["tenant"],
            row["query"],
            row["latest_id"],
        )
    console.print(table)
    console.print(f"{len(items[:limit])} flagged searches, {len(rows)} distinct queries")


@review_app.command("label")
def label(
    item_id: Annotated[str, typer.Argument(help="The item's id (`sieve review list` shows the latest)")],
    indices: Annotated[
        list[int] | None,
        typer.Option("--index", "-i", help="Position of a candidate that answers (repeatable)"),
    ] = None,
    chunk_ids: Annotated[
        list[str] | None, typer.Option("--chunk", help="Chunk id that answers (repeatable)")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="No candidate answers the query")] = False,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Label one flagged search: which candidates answer its query (a new label replaces the old one)."""
    if sum([bool(indices), bool(chunk_ids), none]) != 1:
        raise typer.BadParameter("give exactly one of --index, --chunk or --none")
    body: dict[str, Any] = {"indices": indices} if indices else {"chunk_ids": chunk_ids} if chunk_ids else {}
    item = client(url, key).review_label(item_id, body or {"none": True})
    console.print(f"labelled {item['id']}: {item['query']!r}")


@review_app.command("export")
def export(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (default: standard output)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (the admin key: any tenant)")] = None,
    since: Annotated[float | None, typer.Option(help="Only items flagged from this time (epoch s)")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """The labelled items as training pairs, one JSON object a line (``{"query", "passage", "label"}``)."""
    text = client(url, key).review_export(tenant=tenant, since=since)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        console.print(f"{text.count(chr(10))} pair(s) written to {out}")
