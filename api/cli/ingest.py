"""``sieve ingest`` and ``sieve search``: a running API from a shell (``api.cli.client``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.common import KeyOpt, UrlOpt, client, console


def ingest_files(api: Any, paths: list[Path], metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Upload ``paths``, show a progress bar until every job ends, print what failed; returns the jobs."""
    result = api.upload(paths, metadata=metadata)
    for rejected in result["rejected"]:
        console.print(f"[red]refused[/] {rejected['filename']}: {rejected['error']}")
    job_ids = [j["job_id"] for j in result["jobs"]]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"ingesting {len(job_ids)} file(s)", total=None)

        def show(jobs: list[dict[str, Any]]) -> None:
            total = sum(j["chunks_total"] for j in jobs) or None
            bar.update(task, completed=sum(j["chunks_done"] for j in jobs), total=total)

        jobs: list[dict[str, Any]] = api.wait(job_ids, on_progress=show)
    for job in jobs:
        if job["state"] == "failed":
            console.print(f"[red]failed[/] {job['filename']}: {job['error']}")
    done = [j for j in jobs if j["state"] == "done"]
    console.print(f"{len(done)} document(s) indexed, {sum(j['chunks_total'] for j in done)} chunks")
    return jobs


def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders")],
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with every chunk")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Upload files (folders are walked) and show progress until every job ends."""
    files = [
        f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p])
    ]
    jobs = ingest_files(client(url, key), files, json.loads(metadata) if metadata else None)
    if any(j["state"] == "failed" for j in jobs):
        raise typer.Exit(1)


def search(
    query: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Search and print the hits."""
    result = client(url, key).search(query, top_k=top_k)
    table = Table("#", "document", "score", "text", show_lines=True)
    for i, hit in enumerate(result["hits"], 1):
        where = hit["document_id"] + (f" p.{hit['page']}" if hit["page"] else "")
        table.add_row(str(i), where, f"{hit['score']:.3f}", hit["text"][:300])
    console.print(table)
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in result["timings_ms"].items())
    console.print(f"rerank: {result['rerank']['backend']} · {timings}")
