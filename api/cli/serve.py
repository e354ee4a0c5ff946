"""``sieve up``, ``sieve down``, ``sieve status``, ``sieve serve``, ``sieve rerank-server`` and ``sieve
worker``: run the services, the embedded stack (``api.cli.stack``) or one at a time."""

from __future__ import annotations

import logging
import shlex
import signal
import threading
import time
from importlib import resources as pkg_resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from api.cli.common import (
    DEFAULT_URL,
    HomeOpt,
    KeyOpt,
    client,
    console,
    resolve_home,
    setup_logging,
    sieve_executable,
    stored_key,
    user_home,
)
from api.cli.ingest import ingest_files

if TYPE_CHECKING:
    from api.cli.stack import Stack


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


def _log_supervisor_to(path: Path) -> None:
    """The supervisor's lines (a child exited, restarted, leftovers stopped) also go to ``logs/stack.log``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("api.cli.stack").addHandler(handler)


def _ingest_sample(stack: Stack) -> threading.Thread:
    """Ingest the sample corpus in a thread, so that the main thread keeps supervising meanwhile."""
    from api.cli.client import SieveClient

    def run() -> None:
        try:
            ingest_files(SieveClient(stack.api_url, stack.api_key()), sample_files())
        except Exception as exc:  # noqa: BLE001 - the stack serves anyway: say what went wrong, in one line
            console.print(f"[yellow]sample corpus not ingested:[/] {exc}")

    thread = threading.Thread(target=run, name="sample-ingest", daemon=True)
    thread.start()
    return thread


def _print_hints(stack: Stack) -> None:
    """How to use the stack, as lines that copy safely: the key stays in its file, never printed."""
    exe = sieve_executable()
    key_file = shlex.quote(str(stack.home / "api_key"))
    query = "how do vaccines work"
    lines = [f"Search page: {stack.api_url}/"]
    if stack.home == user_home():
        lines.append("From any folder:")
    else:  # found from its own folder and below, elsewhere through SIEVE_HOME
        lines += [
            "From any folder, with SIEVE_HOME set:",
            f"  export SIEVE_HOME={shlex.quote(str(stack.home))}",
        ]
    lines += [
        f'  {exe} search "{query}"',
        f"  {exe} status",
        f'  export SIEVE_API_KEY="$(cat {key_file})"',
        f"  curl -H \"Authorization: Bearer $SIEVE_API_KEY\" -H 'Content-Type: application/json' "
        f'-d \'{{"query": "{query}"}}\' {stack.api_url}/v1/search',
        f"Ctrl-C here, or `{exe} down` from any folder, stops everything.",
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def up(
    home: HomeOpt = None,
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    redis_port: Annotated[int, typer.Option(help="Port of the stack's own Redis")] = 6390,
    milvus_port: Annotated[int, typer.Option(help="Port of the Milvus Lite server")] = 19540,
    sample: Annotated[bool, typer.Option(help="Ingest the bundled sample corpus")] = True,
) -> None:
    """Start the embedded stack (Redis, Milvus Lite, a Celery worker, the API) and keep it running: a process
    that dies is restarted; Ctrl-C (or `sieve down`) stops it all."""
    from api.cli.stack import Stack, StackError

    home = resolve_home(home)
    setup_logging("WARNING")
    _log_supervisor_to(home / "logs" / "stack.log")
    _stop_on_signals()
    stack = Stack(home=home, redis_port=redis_port, milvus_port=milvus_port, api_port=port)
    started = time.monotonic()
    try:
        with console.status("starting") as status:
            stack.start(on_step=lambda label: status.update(f"starting {label}"))
        console.print(
            f"stack up in {time.monotonic() - started:.1f} s (logs in {home / 'logs'}, state in "
            f"{stack.state_path})",
            highlight=False,
            soft_wrap=True,
        )
        ingest = _ingest_sample(stack) if sample else None
        hinted = False
        while True:
            stack.supervise()
            if not hinted and (ingest is None or not ingest.is_alive()):
                _print_hints(stack)
                hinted = True
            time.sleep(0.5)
    except StackError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()


def down(
    home: HomeOpt = None,
    grace: Annotated[float, typer.Option(help="Seconds to wait for a clean stop before killing")] = 20.0,
) -> None:
    """Stop the embedded stack of a home, whichever shell or folder started it."""
    from api.cli.stack import stop_recorded

    home = resolve_home(home)
    stopped = stop_recorded(home, grace=grace)
    if stopped:
        console.print(f"stopped {', '.join(stopped)} (stack in {home})", highlight=False)
    else:
        console.print(f"no stack running from {home}", highlight=False)


def _ready(url: str) -> dict[str, Any] | str:
    import httpx

    try:
        return dict(httpx.get(f"{url.rstrip('/')}/ready", timeout=5).json())
    except (httpx.HTTPError, ValueError) as exc:
        return f"not answering ({exc})"


def status(
    home: HomeOpt = None,
    url: Annotated[
        str | None, typer.Option(envvar="SIEVE_URL", help="API address (default: the stack's)")
    ] = None,
    key: KeyOpt = "",
) -> None:
    """The stack's processes (pid, restarts, health), the API's readiness and your tenant's documents.
    Exit code 1 when the API is not ready."""
    from api.cli import procs
    from api.stack_state import STATE_FILE, read_state

    home = resolve_home(home)
    state = read_state(home / STATE_FILE)
    url = url or (state or {}).get("api_url") or DEFAULT_URL
    ready = _ready(url)
    checks = ready.get("checks", {}) if isinstance(ready, dict) else {}
    if state:
        running = procs.alive(state.get("pid"), state.get("ticks"))
        console.print(
            f"stack in {home}: sieve up pid {state.get('pid')} "
            + ("running" if running else "[red]not running[/]"),
            highlight=False,
        )
        health = {
            "api": "ready" if isinstance(ready, dict) and ready.get("ready") else "not ready",
            "redis": checks.get("redis", "?"),
            "milvus-lite": checks.get("vector_store", "?"),
        }
        table = Table("process", "pid", "state", "restarts", "last exit", "health")
        for child in state.get("children", []):
            argv = child.get("argv") or [None]
            live = procs.alive(child.get("pid"), child.get("ticks"), argv[0])
            recorded = child.get("state", "?")
            shown = "running" if live else ("dead" if recorded == "running" else recorded)
            table.add_row(
                child.get("name", "?"),
                str(child.get("pid") or ""),
                shown,
                str(child.get("restarts", 0)),
                "" if child.get("last_exit") is None else str(child["last_exit"]),
                health.get(child.get("name", ""), "alive") if live else "",
            )
        console.print(table)
    else:
        console.print(f"no stack started from {home} (no {STATE_FILE}); asking {url}", highlight=False)
    if not isinstance(ready, dict):
        console.print(f"[red]API at {url}: {ready}[/]", highlight=False)
        raise typer.Exit(1)
    line = " · ".join(f"{k} {v}" for k, v in checks.items())
    console.print(
        f"API at {url}: {'ready' if ready.get('ready') else '[red]not ready[/]'} · {line}", highlight=False
    )
    if key or stored_key("api_key", home):
        from api.cli.client import SieveClientError

        try:
            docs = client(url, key or stored_key("api_key", home) or "").documents()
        except SieveClientError as exc:
            console.print(f"[red]documents: {exc}[/]", highlight=False)
            raise typer.Exit(1) from exc
        table = Table("document", "chunks", "version", "pending")
        for doc in docs:
            table.add_row(
                doc["document_id"], str(doc["chunks"]), doc["version"], doc["pending_version"] or ""
            )
        console.print(table)
    if not ready.get("ready"):
        raise typer.Exit(1)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
) -> None:
    """Run the API (settings from API_*, INGEST_*, RETRIEVAL_*, RERANK_* environment variables). On an
    address other than loopback it refuses placeholder or short keys (API_KEYS, API_ADMIN_KEY)."""
    import uvicorn

    from api.app import create_app
    from api.resources import Settings
    from api.settings import UnsafeSettingsError, check_exposure

    setup_logging()
    settings = Settings()
    settings.api.host = host or settings.api.host
    settings.api.port = port or settings.api.port
    try:
        check_exposure(settings.api, settings.api.host)
    except UnsafeSettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port, log_level="info")


def rerank_server(
    host: Annotated[
        str, typer.Option(help="Bind address (not loopback: needs RERANK_SERVER_TOKEN)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (with --devices: the first one's, counted up)")] = 8101,
    device: Annotated[str | None, typer.Option(help="Device of the model (default RERANK_DEVICE)")] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="One server per device, on ports --port, --port+1, ...: 'cuda:0,cuda:1' or 'all' (every "
            "visible GPU); each is warmed before its /ready answers, and one that exits is started again"
        ),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="With --devices: seconds to wait for every server's /ready")
    ] = 900.0,
) -> None:
    """Serve the rerank stage alone (RERANK_* settings): Cohere-style /v1/rerank, one process per GPU
    (--devices starts and supervises one per device). Clients send RERANK_SERVER_TOKEN as a Bearer token
    when it is set; it must be set off loopback."""
    import uvicorn

    from api.rerank_server import RerankServerSettings, check_exposure, create_rerank_app
    from api.settings import UnsafeSettingsError

    setup_logging()
    if device and devices:
        typer.echo("give --device (one server) or --devices (one per device), not both", err=True)
        raise typer.Exit(2)
    settings = RerankServerSettings(host=host)
    if device:
        settings.rerank.device = device
    try:
        check_exposure(settings)
    except UnsafeSettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if devices:
        from api.cli.rerank_fleet import Fleet, FleetError, parse_devices, run_fleet

        try:
            fleet = Fleet(parse_devices(devices), host=host, port=port)
        except FleetError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        code = run_fleet(
            fleet,
            ready_timeout_s=ready_timeout,
            grace=20.0,
            say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
        )
        raise typer.Exit(code)
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
