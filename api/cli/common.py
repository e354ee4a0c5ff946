"""What the command groups of ``sieve`` share: the console, the data folder, the options naming the API
and the stack's Redis, logging set-up and the API client."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from api.cli.client import SieveClient

console = Console()

HOME = Path(os.environ.get("SIEVE_HOME", ".sieve"))
UrlOpt = Annotated[str, typer.Option(envvar="SIEVE_URL", help="API address")]
RedisOpt = Annotated[str, typer.Option(envvar="INGEST_REDIS_URL", help="Redis of the stack (gate decisions)")]
KeyOpt = Annotated[str, typer.Option(envvar="SIEVE_API_KEY", help="API key (default: the embedded stack's)")]


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def client(url: str, key: str) -> SieveClient:
    """A client of the API at ``url``; without ``key``, the embedded stack's (``<home>/api_key``)."""
    from api.cli.client import SieveClient

    if not key:
        path = HOME / "api_key"
        if not path.exists():
            raise typer.BadParameter("no API key: pass --key, set SIEVE_API_KEY, or start `sieve up` first")
        key = path.read_text().strip()
    return SieveClient(url, key)


def command_line() -> str:
    """The command as typed (``sieve ...``, also ``python -m api.cli ...``), for reports; empty when run
    otherwise (e.g. by a test runner's ``CliRunner``)."""
    invoked = Path(sys.argv[0]).name in {"sieve", "cli.py", "__main__.py"}
    return shlex.join(["sieve", *sys.argv[1:]]) if invoked else ""
