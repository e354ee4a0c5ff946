"""``sieve``: run the embedded stack, the API, a worker; ingest, search and check status from a shell;
measure, gate and train. This module builds the typer app; each command group lives in a module of its own:

    serve     up, down, status, serve, rerank-server, worker
    ingest    ingest, search (a running API through ``api.cli.client``)
    eval      eval (``api.relevance``)
    reindex   reindex, reload (admin routes)
    review    review clusters
    gate      gate apply|show|clear
    train     train embedder|reranker (``api.relevance.train_run``)
    keys      keys create|list|revoke|limit (``api.tenant_keys``)
    errors    the one error -> message and exit code mapping (``SieveGroup``)

Commands import what is heavy (models, the app, Celery) when they run, so ``import api.cli`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import HomeOpt, set_home
from api.cli.errors import SieveGroup, set_debug
from api.cli.eval import eval_command
from api.cli.gate import gate_app
from api.cli.ingest import ingest, search
from api.cli.keys import keys_app
from api.cli.reindex import reindex, reload
from api.cli.review import review_app
from api.cli.serve import down, rerank_server, serve, status, up, worker
from api.cli.train import train_app

app = typer.Typer(
    cls=SieveGroup,
    help="Sieve: two-stage retrieval for RAG.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    home: HomeOpt = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="SIEVE_DEBUG", help="On an error, print the traceback too")
    ] = False,
) -> None:
    """Sieve: two-stage retrieval for RAG. Every command finds the embedded stack through its home (--home,
    SIEVE_HOME, the nearest .sieve/ upward, then ~/.local/share/sieve). An error prints one line saying what
    failed and what to do; exit codes: 1 failure, 2 usage, 3 cannot reach the stack, 130 interrupted."""
    set_home(Path(home) if home else None)
    set_debug(debug)


app.command()(up)
app.command()(down)
app.command()(serve)
app.command("rerank-server")(rerank_server)
app.command()(worker)
app.command()(ingest)
app.command()(search)
app.command()(status)
app.command("eval")(eval_command)
app.command()(reindex)
app.command()(reload)
app.add_typer(review_app, name="review")
app.add_typer(gate_app, name="gate")
app.add_typer(train_app, name="train")
app.add_typer(keys_app, name="keys")
