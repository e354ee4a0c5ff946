"""The ``sieve`` app: every command and command group is registered, under its name."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from api.cli import app

COMMANDS = [
    "up",
    "down",
    "serve",
    "rerank-server",
    "worker",
    "ingest",
    "search",
    "status",
    "eval",
    "reindex",
    "reload",
]
GROUPS = {
    "review": ["clusters", "list", "label", "export"],
    "gate": ["apply", "show", "clear"],
    "train": ["embedder", "reranker"],
    "keys": ["create", "list", "revoke", "limit"],
}


def test_every_command_and_group_is_registered() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined] # a click Group
    assert list(commands) == [*COMMANDS, *GROUPS]
    for group, subcommands in GROUPS.items():
        assert list(commands[group].commands) == subcommands


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in [*COMMANDS, *GROUPS])
