"""Issue 13 item 3: one line saying what failed and what to do, exit codes scripts can use, ``--debug`` for
the traceback (``api.cli.errors``)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from api.cli.main import app


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"SIEVE_HOME": str(tmp_path / "home"), "SIEVE_API_KEY": "k", "COLUMNS": "300", "SIEVE_DEBUG": ""}


def test_unreachable_api_is_one_line_and_exit_3(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(app, ["search", "bees", "--url", url], env=env)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert "cannot reach the stack" in line and url in line and "sieve up" in line


def test_debug_flag_shows_the_traceback(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(app, ["--debug", "search", "bees", "--url", url], env=env)
    assert result.exit_code == 3
    assert "Traceback" in result.output and "cannot reach the stack" in result.output


def test_bad_metadata_json_is_a_usage_error(env: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.txt").write_text("x")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "a.txt"), "--metadata", "{nope"], env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "not valid JSON" in result.output


def test_api_refusal_is_one_line_exit_1(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from api.cli import ingest as ingest_mod
    from api.cli.client import SieveClientError

    class Refusing:
        def search(self, *a: object, **k: object) -> None:
            raise SieveClientError(401, "unknown API key")

    monkeypatch.setattr(ingest_mod, "client", lambda url, key: Refusing())
    result = CliRunner().invoke(app, ["search", "bees"], env=env)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "401" in result.output and "--key" in result.output


def test_usage_errors_keep_click_exit_2(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["search"], env=env)
    assert result.exit_code == 2
