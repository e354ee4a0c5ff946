"""``sieve up``, ``sieve serve``, ``sieve rerank-server`` and ``sieve worker``: run the services, the embedded
stack (``api.cli.stack``) or one at a time."""

from __future__ import annotations

import signal
import time
from importlib import resources as pkg_resources
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import HOME, console, setup_logging
from api.cli.ingest import ingest_files


def sample_files() -> list[Path]:
    folder = pkg_resources.files("api").joinpath("sample")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.is_file())


def _stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all stop the stack, also when started from a script where SIGINT was
    inherited as ignored (background jobs of a non-interactive shell)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def up(
    home: Annotated[Path, typer.Option(help="Data folder (reused on the next start)")] = HOME,
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    redis_port: Annotated[int, typer.Option(help="Port of the stack's own Redis")] = 6390,
    milvus_port: Annotated[int, typer.Option(help="Port of the Milvus Lite server")] = 19540,
    sample: Annotated[bool, typer.Option(help="Ingest the bundled sample corpus")] = True,
) -> None:
    """Start the embedded stack (Redis, Milvus Lite, a Celery worker, the API); Ctrl-C stops it all."""
    from api.cli.client import SieveClient
    from api.cli.stack import Stack, StackError

    setup_logging("WARNING")
    _stop_on_signals()
    stack = Stack(home=home, redis_port=redis_port, milvus_port=milvus_port, api_port=port)
    started = time.monotonic()
    try:
        with console.status("starting") as status:
            stack.start(on_step=lambda label: status.update(f"starting {label}"))
        console.print(f"stack up in {time.monotonic() - started:.1f} s (logs in {home / 'logs'})")
        key = stack.api_key()
        if sample:
            ingest_files(SieveClient(stack.api_url, key), sample_files())
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


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
) -> None:
    """Run the API (settings from API_*, INGEST_*, RETRIEVAL_*, RERANK_* environment variables)."""
    import uvicorn

    from api.app import create_app
    from api.resources import Settings

    setup_logging()
    settings = Settings()
    uvicorn.run(
        create_app(settings), host=host or settings.api.host, port=port or settings.api.port, log_level="info"
    )


def rerank_server(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8101,
    device: Annotated[str | None, typer.Option(help="Device of the model (default RERANK_DEVICE)")] = None,
) -> None:
    """Serve the rerank stage alone (RERANK_* settings): Cohere-style /v1/rerank, one process per GPU."""
    import uvicorn

    from api.rerank_server import RerankServerSettings, create_rerank_app

    setup_logging()
    settings = RerankServerSettings()
    if device:
        settings.rerank.device = device
    uvicorn.run(create_rerank_app(settings), host=host, port=port, log_level="info")


def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (one model each)")] = 1,
    pool: Annotated[str, typer.Option(help="prefork on CPU; solo or threads on a GPU")] = "prefork",
) -> None:
    """Run a Celery ingestion worker."""
    from ingestion.worker import make_celery

    setup_logging()
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
