"""Where the CLI finds its stack: the home rule (flag, SIEVE_HOME, nearest .sieve/ upward, per-user default),
and the API address, Redis URL and key that every command takes from the stack's state file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from api.cli import app, common
from api.cli.common import RedisOpt, UrlOpt, resolve_home
from api.stack_state import STATE_FILE, write_state


@pytest.fixture(autouse=True)
def no_global_home() -> Iterator[None]:
    common.set_home(None)
    yield
    common.set_home(None)


def test_the_flag_wins_over_everything(tmp_path: Path) -> None:
    (tmp_path / ".sieve").mkdir()
    env = {"SIEVE_HOME": str(tmp_path / "env"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert resolve_home(tmp_path / "flag", cwd=tmp_path, env=env) == tmp_path / "flag"


def test_the_global_flag_comes_before_the_environment(tmp_path: Path) -> None:
    common.set_home(tmp_path / "global")
    assert resolve_home(cwd=tmp_path, env={"SIEVE_HOME": str(tmp_path / "env")}) == tmp_path / "global"
    assert resolve_home(tmp_path / "flag", cwd=tmp_path, env={}) == tmp_path / "flag"


def test_sieve_home_comes_before_a_sieve_folder(tmp_path: Path) -> None:
    (tmp_path / ".sieve").mkdir()
    assert resolve_home(cwd=tmp_path, env={"SIEVE_HOME": str(tmp_path / "env")}) == tmp_path / "env"


def test_the_nearest_sieve_folder_upward_is_found(tmp_path: Path) -> None:
    (tmp_path / ".sieve").mkdir()
    (tmp_path / "a" / ".sieve").mkdir(parents=True)
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert resolve_home(cwd=deep, env=env) == tmp_path / "a" / ".sieve"
    assert resolve_home(cwd=tmp_path, env=env) == tmp_path / ".sieve"


def test_a_file_named_sieve_is_not_a_home(tmp_path: Path) -> None:
    (tmp_path / ".sieve").write_text("not a folder")
    assert (
        resolve_home(cwd=tmp_path, env={"XDG_DATA_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "sieve"
    )


def test_the_per_user_default_follows_xdg_then_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert (
        resolve_home(cwd=tmp_path, env={"XDG_DATA_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "sieve"
    )
    assert resolve_home(cwd=tmp_path, env={}) == tmp_path / "user" / ".local" / "share" / "sieve"


def test_a_relative_home_is_made_absolute(tmp_path: Path) -> None:
    assert resolve_home(cwd=tmp_path, env={"SIEVE_HOME": "rel/home"}) == tmp_path / "rel" / "home"


# -- what commands take from the state file ---------------------------------------------------------------


@pytest.fixture
def stack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with the state file of a stack on API port 8100 and Redis port 6391, from another folder."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "api_key").write_text("stack-key\n")
    (home / "admin_key").write_text("admin-key\n")
    (home / "redis_password").write_text("s3cret\n")
    write_state(
        home / STATE_FILE,
        {
            "host": "127.0.0.1",
            "api_url": "http://127.0.0.1:8100",
            "ports": {"api": 8100, "redis": 6391, "milvus": 19541},
            "files": {n: str(home / n) for n in ("api_key", "admin_key", "redis_password")},
            "children": [],
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SIEVE_HOME", str(home))
    for name in ("SIEVE_URL", "INGEST_REDIS_URL", "SIEVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return home


def options_app() -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    def show(url: UrlOpt = "http://127.0.0.1:8000", redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
        typer.echo(f"{url} {redis_url}")

    return probe


def test_url_and_redis_come_from_the_state_file(stack_home: Path) -> None:
    result = CliRunner().invoke(options_app(), [])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["http://127.0.0.1:8100", "redis://:s3cret@127.0.0.1:6391/0"]


def test_explicit_options_and_variables_override_the_state_file(stack_home: Path) -> None:
    runner = CliRunner()
    given = runner.invoke(options_app(), ["--url", "http://h:1", "--redis-url", "redis://r:2/0"])
    assert given.output.split() == ["http://h:1", "redis://r:2/0"]
    from_env = runner.invoke(
        options_app(), [], env={"SIEVE_URL": "http://e:3", "INGEST_REDIS_URL": "redis://e:4"}
    )
    assert from_env.output.split() == ["http://e:3", "redis://e:4"]


def test_without_a_stack_the_defaults_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("SIEVE_URL", raising=False)
    monkeypatch.delenv("INGEST_REDIS_URL", raising=False)
    result = CliRunner().invoke(options_app(), [])
    assert result.output.split() == ["http://127.0.0.1:8000", "redis://127.0.0.1:6390/0"]


class RecordingClient:
    made: list[tuple[str, str]] = []

    def __init__(self, url: str, key: str, **_: Any) -> None:
        RecordingClient.made.append((url, key))

    def search(self, query: str, **params: Any) -> dict[str, Any]:
        return {"hits": [], "timings_ms": {}, "rerank": {"backend": "none"}}


@pytest.mark.parametrize("global_flag", [False, True])
def test_search_from_another_folder_uses_the_stack_port_and_key(
    stack_home: Path, monkeypatch: pytest.MonkeyPatch, global_flag: bool
) -> None:
    """`sieve up --port 8100` is remembered: `sieve search` from another folder calls 8100 with the stack's
    key, the home named by SIEVE_HOME or by `sieve --home`."""
    monkeypatch.setattr("api.cli.client.SieveClient", RecordingClient)
    RecordingClient.made.clear()
    args = ["search", "anything"]
    if global_flag:
        monkeypatch.delenv("SIEVE_HOME")
        args = ["--home", str(stack_home), *args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert RecordingClient.made == [("http://127.0.0.1:8100", "stack-key")]


def test_a_missing_key_names_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEVE_HOME", str(tmp_path / "nothing"))
    monkeypatch.delenv("SIEVE_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["search", "anything"], env={"COLUMNS": "400"})
    assert result.exit_code != 0
    assert "start `sieve up` first" in result.output
    assert str(tmp_path / "nothing" / "api_key") in result.output
