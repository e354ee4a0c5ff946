"""``sieve``: run the embedded stack, the API, a worker; ingest, search and check status from a shell."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from importlib import resources as pkg_resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api import reindex_cli
from api.review_cli import review_app

app = typer.Typer(help="Sieve: two-stage retrieval for RAG.", no_args_is_help=True)
app.add_typer(review_app, name="review")
console = Console()

HOME = Path(os.environ.get("SIEVE_HOME", ".sieve"))
UrlOpt = Annotated[str, typer.Option(envvar="SIEVE_URL", help="API address")]
RedisOpt = Annotated[str, typer.Option(envvar="INGEST_REDIS_URL", help="Redis of the stack (gate decisions)")]
KeyOpt = Annotated[str, typer.Option(envvar="SIEVE_API_KEY", help="API key (default: the embedded stack's)")]


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _client(url: str, key: str) -> Any:
    from api.client import SieveClient

    if not key:
        path = HOME / "api_key"
        if not path.exists():
            raise typer.BadParameter("no API key: pass --key, set SIEVE_API_KEY, or start `sieve up` first")
        key = path.read_text().strip()
    return SieveClient(url, key)


def sample_files() -> list[Path]:
    folder = pkg_resources.files("api").joinpath("sample")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.is_file())


def _ingest(client: Any, paths: list[Path], metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = client.upload(paths, metadata=metadata)
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

        jobs: list[dict[str, Any]] = client.wait(job_ids, on_progress=show)
    for job in jobs:
        if job["state"] == "failed":
            console.print(f"[red]failed[/] {job['filename']}: {job['error']}")
    done = [j for j in jobs if j["state"] == "done"]
    console.print(f"{len(done)} document(s) indexed, {sum(j['chunks_total'] for j in done)} chunks")
    return jobs


def _stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all stop the stack, also when started from a script where SIGINT was
    inherited as ignored (background jobs of a non-interactive shell)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


@app.command()
def up(
    home: Annotated[Path, typer.Option(help="Data folder (reused on the next start)")] = HOME,
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    redis_port: Annotated[int, typer.Option(help="Port of the stack's own Redis")] = 6390,
    milvus_port: Annotated[int, typer.Option(help="Port of the Milvus Lite server")] = 19540,
    sample: Annotated[bool, typer.Option(help="Ingest the bundled sample corpus")] = True,
) -> None:
    """Start the embedded stack (Redis, Milvus Lite, a Celery worker, the API); Ctrl-C stops it all."""
    from api.client import SieveClient
    from api.stack import Stack, StackError

    _logging("WARNING")
    _stop_on_signals()
    stack = Stack(home=home, redis_port=redis_port, milvus_port=milvus_port, api_port=port)
    started = time.monotonic()
    try:
        with console.status("starting") as status:
            stack.start(on_step=lambda label: status.update(f"starting {label}"))
        console.print(f"stack up in {time.monotonic() - started:.1f} s (logs in {home / 'logs'})")
        key = stack.api_key()
        if sample:
            _ingest(SieveClient(stack.api_url, key), sample_files())
        console.print(f"\n[bold]Search:[/] {stack.api_url}/  (API key: {key})")
        console.print(
            f'  sieve search "how do vaccines work"    or    curl -H "Authorization: Bearer {key}" '
            f"-d '{{\"query\": \"how do vaccines work\"}}' -H 'Content-Type: application/json' "
            f"{stack.api_url}/v1/search"
        )
        console.print("Ctrl-C stops everything.")
        while not stack.dead():
            time.sleep(1)
        console.print(f"[red]stopped:[/] {', '.join(stack.dead())} exited (see {home / 'logs'})")
        raise typer.Exit(1)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
) -> None:
    """Run the API (settings from API_*, INGEST_*, RETRIEVAL_*, RERANK_* environment variables)."""
    import uvicorn

    from api.app import create_app
    from api.resources import Settings

    _logging()
    settings = Settings()
    uvicorn.run(
        create_app(settings), host=host or settings.api.host, port=port or settings.api.port, log_level="info"
    )


@app.command("rerank-server")
def rerank_server(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8101,
    device: Annotated[str | None, typer.Option(help="Device of the model (default RERANK_DEVICE)")] = None,
) -> None:
    """Serve the rerank stage alone (RERANK_* settings): Cohere-style /v1/rerank, one process per GPU."""
    import uvicorn

    from api.rerank_server import RerankServerSettings, create_rerank_app

    _logging()
    settings = RerankServerSettings()
    if device:
        settings.rerank.device = device
    uvicorn.run(create_rerank_app(settings), host=host, port=port, log_level="info")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (one model each)")] = 1,
    pool: Annotated[str, typer.Option(help="prefork on CPU; solo or threads on a GPU")] = "prefork",
) -> None:
    """Run a Celery ingestion worker."""
    from ingestion.worker import make_celery

    _logging()
    celery = make_celery()
    celery.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            "--loglevel=INFO",
            "-Q",
            celery.conf.task_default_queue,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
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
    jobs = _ingest(_client(url, key), files, json.loads(metadata) if metadata else None)
    if any(j["state"] == "failed" for j in jobs):
        raise typer.Exit(1)


@app.command()
def search(
    query: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    url: UrlOpt = "http://127.0.0.1:8000",
    key: KeyOpt = "",
) -> None:
    """Search and print the hits."""
    result = _client(url, key).search(query, top_k=top_k)
    table = Table("#", "document", "score", "text", show_lines=True)
    for i, hit in enumerate(result["hits"], 1):
        where = hit["document_id"] + (f" p.{hit['page']}" if hit["page"] else "")
        table.add_row(str(i), where, f"{hit['score']:.3f}", hit["text"][:300])
    console.print(table)
    timings = ", ".join(f"{k} {v:.1f} ms" for k, v in result["timings_ms"].items())
    console.print(f"rerank: {result['rerank']['backend']} · {timings}")


@app.command()
def status(url: UrlOpt = "http://127.0.0.1:8000", key: KeyOpt = "") -> None:
    """Readiness of the stack and the documents of your tenant."""
    client = _client(url, key)
    console.print_json(data=client.ready())
    docs = client.documents()
    table = Table("document", "chunks", "version", "pending")
    for doc in docs:
        table.add_row(doc["document_id"], str(doc["chunks"]), doc["version"], doc["pending_version"] or "")
    console.print(table)


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="BEIR-layout folder")],
    out: Annotated[Path, typer.Option(help="Report folder (.md, .json, chart)")] = Path("eval-report"),
    milvus_uri: Annotated[
        str | None,
        typer.Option(
            help="Use this Milvus (memory:// in-process); default: start a Milvus Lite server of its own"
        ),
    ] = None,
    qrels: Annotated[str | None, typer.Option(help="qrels/NAME.tsv (default: test, or the only one)")] = None,
    split: Annotated[str, typer.Option(help="Queries: all, eval (sha256(id) % 5 == 0) or train")] = "all",
    queries: Annotated[int | None, typer.Option(help="Only the first N queries")] = None,
    corpus_limit: Annotated[int | None, typer.Option(help="First N documents (+ the judged ones)")] = None,
    modes: Annotated[str, typer.Option(help="Stage-1 modes, comma-separated")] = "bm25,dense,hybrid",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf or weighted")] = "rrf",
    rrf_k: Annotated[int, typer.Option(help="RRF k")] = 60,
    weights: Annotated[str | None, typer.Option(help="Hybrid weights 'dense,bm25'")] = None,
    rerank_depth: Annotated[int, typer.Option(help="Documents the reranker scores")] = 50,
    rerank_modes: Annotated[
        str | None,
        typer.Option(
            help="Modes with +rerank configurations, comma-separated (default RETRIEVAL_SEARCH_MODE)"
        ),
    ] = None,
    keep_index: Annotated[bool, typer.Option(help="Keep the collection (with --milvus-uri)")] = False,
    gate: Annotated[
        bool, typer.Option(help="Learn a fusion on train queries, decide the rerank gate on the eval split")
    ] = False,
    gate_train_queries: Annotated[int, typer.Option(help="Train-split queries to learn the fusion on")] = 100,
    min_gain: Annotated[float, typer.Option(help="Gate: the nDCG@10 gain stage 2 must show")] = 0.005,
    gate_alpha: Annotated[float, typer.Option(help="Gate: the paired t-test's p must be below this")] = 0.05,
    tenant: Annotated[
        str, typer.Option(help="With --apply: the tenant the decision is stored for")
    ] = "default",
    apply: Annotated[bool, typer.Option(help="Store the gate's decision in the stack's Redis")] = False,
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Measure BM25, dense and hybrid retrieval (each also with the configured reranker) on a BEIR folder."""
    import shlex
    import sys

    from api.eval_run import EvalOptions, parse_weights, run, summary_rows
    from ingestion.settings import IngestSettings
    from retrieval.settings import RetrievalSettings

    _logging("WARNING")
    ingest = IngestSettings()
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    default_mode = RetrievalSettings().search_mode
    rerank_list = (
        tuple(m.strip() for m in rerank_modes.split(",") if m.strip())
        if rerank_modes
        else (default_mode,)
        if default_mode in mode_list
        else mode_list[-1:]
    )
    options = EvalOptions(
        modes=mode_list,
        rerank_modes=rerank_list,
        fusion=fusion,
        rrf_k=rrf_k,
        weights=parse_weights(weights),
        rerank_depth=rerank_depth,
        chunk_tokens=ingest.chunk_tokens,
        chunk_overlap=ingest.chunk_overlap,
        gate=gate,
        min_gain=min_gain,
        gate_alpha=gate_alpha,
    )
    invoked = Path(sys.argv[0]).name in {"sieve", "cli.py"}
    try:
        report = run(
            folder,
            out,
            milvus_uri=milvus_uri,
            qrels=qrels,
            split=split,
            max_queries=queries,
            corpus_limit=corpus_limit,
            options=options,
            keep_index=keep_index,
            gate_train_queries=gate_train_queries,
            console=console,
            command=shlex.join(["sieve", *sys.argv[1:]]) if invoked else "",
        )
    except ValueError as exc:  # a folder not in the BEIR layout, an unknown mode or split
        raise typer.BadParameter(str(exc)) from exc
    table = Table("configuration", "nDCG@10", "R@50", "R@100", "MRR@10")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"report: {out / 'report.md'}")
    if "gate" in report["files"]:
        from api.gate_decision import GateDecision

        decision = GateDecision.model_validate(report["gate"])
        colour = "green" if decision.enabled else "yellow"
        console.print(
            f"[{colour}]rerank gate: {'enabled' if decision.enabled else 'disabled'}[/] — {decision.reason}"
        )
        console.print(f"decision: {report['files']['gate']}")
        if apply:
            _gate_store(redis_url).put(tenant, decision)
            console.print(f"stored for tenant {tenant!r} at {redis_url}")
    elif apply:
        console.print("[red]nothing to apply:[/] no gate decision (pass --gate, configure RERANK_BACKEND)")
        raise typer.Exit(1)


gate_app = typer.Typer(
    help="The rerank gate: store, show or clear a tenant's decision.", no_args_is_help=True
)
app.add_typer(gate_app, name="gate")
TenantOpt = Annotated[str, typer.Option(help="Tenant (the embedded stack's is 'default')")]


def _gate_store(redis_url: str) -> Any:
    import redis

    from api.gate_store import GateStore

    return GateStore(redis.Redis.from_url(redis_url, decode_responses=True))


@gate_app.command("apply")
def gate_apply(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="gate.json from `sieve eval --gate`")
    ],
    tenant: TenantOpt = "default",
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Store a decision for a tenant; search follows it at once (API_RERANK_GATE=evaluated)."""
    from api.gate_decision import GateDecision

    decision = GateDecision.model_validate_json(path.read_text(encoding="utf-8"))
    _gate_store(redis_url).put(tenant, decision)
    console.print(
        f"tenant {tenant!r}: rerank stage {'enabled' if decision.enabled else 'disabled'} — {decision.reason}"
    )


@gate_app.command("show")
def gate_show(tenant: TenantOpt = "default", redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
    """Print a tenant's stored decision (JSON)."""
    decision = _gate_store(redis_url).get(tenant)
    if decision is None:
        console.print(
            f"tenant {tenant!r}: no decision stored "
            "(under API_RERANK_GATE=evaluated, search runs stage 1 only)"
        )
        raise typer.Exit(1)
    console.print_json(decision.model_dump_json(exclude={"grid"}))


@gate_app.command("clear")
def gate_clear(tenant: TenantOpt = "default", redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
    """Remove a tenant's decision (search then runs stage 1 only under API_RERANK_GATE=evaluated)."""
    removed = _gate_store(redis_url).delete(tenant)
    console.print(f"tenant {tenant!r}: {'decision removed' if removed else 'no decision was stored'}")


from api.train_cmd import train_app  # noqa: E402 - the sub-app registers after the main commands

app.add_typer(train_app, name="train")
app.command("reindex")(reindex_cli.reindex)
app.command("reload")(reindex_cli.reload)


if __name__ == "__main__":
    app()
