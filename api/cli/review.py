"""``sieve review clusters``: the review queue's recurring gaps from a shell (``GET /v1/review/clusters``)."""

from __future__ import annotations

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
