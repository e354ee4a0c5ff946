"""``sieve ingest`` and ``sieve search``: a running API from a shell (``api.cli.client``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.common import KeyOpt, UrlOpt, client, console


@dataclass(frozen=True)
class Planned:
    """One file to upload and the document id it gets (None: the server's, the file name)."""

    path: Path
    document_id: str | None

    @property
    def key(self) -> str:
        return self.document_id or self.path.name


def plan_uploads(paths: list[Path]) -> tuple[list[Planned], list[tuple[Planned, Planned]]]:
    """The files to upload for ``paths`` and the collisions left out.

    A file given by itself keeps its name as its id; a folder is walked and each file's id is its path
    relative to that folder, with ``/`` (``sieve ingest docs`` -> ``a/README.md``, ``b/README.md``). Two
    files that would get the same id collide: the first is kept, each later one is returned beside the one it
    collides with (never uploaded, never silently overwriting)."""
    planned: list[Planned] = []
    for p in paths:
        if p.is_dir():
            planned += [
                Planned(f, f.relative_to(p).as_posix())
                for f in sorted(x for x in p.rglob("*") if x.is_file())
            ]
        else:
            planned.append(Planned(p, None))
    kept: dict[str, Planned] = {}
    collisions: list[tuple[Planned, Planned]] = []
    for item in planned:
        if item.key in kept:
            collisions.append((kept[item.key], item))
        else:
            kept[item.key] = item
    return list(kept.values()), collisions


def ingest_files(
    api: Any, paths: list[Path] | list[Planned], metadata: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Upload ``paths`` (one request per file, so a refused file never stops the rest), show a progress bar
    until every job ends, list what was refused or failed with its reason and print the counts; returns the
    jobs."""
    from api.cli.client import SieveClientError

    items = [p if isinstance(p, Planned) else Planned(p, None) for p in paths]
    job_ids: list[str] = []
    refused = 0
    for item in items:
        try:
            result = api.upload([item.path], metadata=metadata, document_id=item.document_id)
        except SieveClientError as exc:
            refused += 1
            console.print(f"[red]refused[/] {item.path} ({exc.status}): {exc.message}")
            continue
        for rejected in result["rejected"]:
            refused += 1
            console.print(f"[red]refused[/] {item.path}: {rejected['error']}")
        job_ids += [j["job_id"] for j in result["jobs"]]
    jobs: list[dict[str, Any]] = []
    if job_ids:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(f"ingesting {len(job_ids)} file(s)", total=None)

            def show(current: list[dict[str, Any]]) -> None:
                total = sum(j["chunks_total"] for j in current) or None
                bar.update(task, completed=sum(j["chunks_done"] for j in current), total=total)

            jobs = api.wait(job_ids, on_progress=show)
    for job in jobs:
        if job["state"] == "failed":
            console.print(f"[red]failed[/] {job['document_id']}: {job['error']}")
    done = [j for j in jobs if j["state"] == "done"]
    failed = len(jobs) - len(done)
    summary = f"{len(done)} document(s) indexed, {sum(j['chunks_total'] for j in done)} chunks"
    if refused or failed:
        summary += f"; {refused} refused, {failed} failed"
    console.print(summary)
    return jobs


def ingest(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="Files or folders")],
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with every chunk")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Upload files and folders and show progress until every job ends. A file's document id is its name; a
    folder's files get their path relative to that folder (``a/README.md``). Files that would get the same id
    are reported and left out; a refused file is listed with its reason and the rest go on. Exit 1 when any
    file was refused, failed or collided."""
    planned, collisions = plan_uploads(paths)
    for first, later in collisions:
        console.print(
            f"[red]collision[/] {later.path} would get document id {later.key!r}, as {first.path} does: "
            "left out (ingest it on its own with a distinct name, or ingest the parent folder)"
        )
    jobs = ingest_files(client(url, key), planned, json.loads(metadata) if metadata else None)
    if collisions:
        console.print(f"{len(collisions)} file(s) left out: id collision")
    if collisions or len(jobs) < len(planned) or any(j["state"] == "failed" for j in jobs):
        raise typer.Exit(1)


def search(
    query: Annotated[
        str, typer.Argument(help='What to look for, in plain words (quote it: "how do bees dance")')
    ],
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
