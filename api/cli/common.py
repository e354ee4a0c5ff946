"""What the command groups of ``sieve`` share: the console, where the stack lives (its home and its state
file), the options naming the API and the stack's Redis, logging set-up and the API client.

**The home** (the embedded stack's data, secrets and state file) is, first found:

1. ``--home`` (``sieve --home DIR <command>``, or ``sieve up|down|status --home DIR``);
2. ``SIEVE_HOME``;
3. the nearest folder named ``.sieve`` in the current folder or above it;
4. the per-user default, ``$XDG_DATA_HOME/sieve`` (``~/.local/share/sieve``).

``sieve up`` writes ``<home>/stack.json`` (``api.stack_state``); every other command reads the API address,
the Redis address and the key files from it, so ``sieve up --port 8100`` is found from any folder.
``--url`` / ``SIEVE_URL``, ``--redis-url`` / ``INGEST_REDIS_URL`` and ``--key`` / ``SIEVE_API_KEY`` override
it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from api.stack_state import STATE_FILE, read_state

if TYPE_CHECKING:
    from api.cli.client import SieveClient

console = Console()

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"
_home_flag: Path | None = None  # ``sieve --home DIR``


def set_home(path: Path | None) -> None:
    """The ``--home`` given before the command (``sieve --home DIR search ...``)."""
    global _home_flag
    _home_flag = path


def user_home(env: Mapping[str, str] | None = None) -> Path:
    """The per-user default home: ``$XDG_DATA_HOME/sieve``, else ``~/.local/share/sieve``."""
    env = os.environ if env is None else env
    data = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "sieve"


def resolve_home(
    flag: Path | None = None, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The stack's home by the rule in this module's docstring, as an absolute path."""
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).absolute()
    found = flag or _home_flag or (Path(env["SIEVE_HOME"]) if env.get("SIEVE_HOME") else None)
    if found is None:
        found = next((d / ".sieve" for d in (cwd, *cwd.parents) if (d / ".sieve").is_dir()), None)
    if found is None:
        found = user_home(env)
    return (found if found.is_absolute() else cwd / found).absolute()


def stack_state(home: Path | None = None) -> dict[str, Any] | None:
    """The state file of the stack in ``home`` (resolved when None); None when no stack was started there."""
    return read_state(resolve_home(home) / STATE_FILE)


def stack_file(name: str, home: Path | None = None) -> Path:
    """Where the stack keeps ``name`` (``api_key``, ``admin_key``, ``redis_password``): from its state file,
    else in the home."""
    home = resolve_home(home)
    files = (read_state(home / STATE_FILE) or {}).get("files") or {}
    return Path(files.get(name) or home / name)


def stored_key(name: str, home: Path | None = None) -> str | None:
    try:
        return stack_file(name, home).read_text().strip() or None
    except OSError:
        return None


def stack_api_url(home: Path | None = None) -> str | None:
    state = stack_state(home)
    return str(state["api_url"]) if state and state.get("api_url") else None


def stack_redis_url(home: Path | None = None) -> str | None:
    """The stack's Redis, with its password, from the state file."""
    state = stack_state(home)
    if not state or "redis" not in state.get("ports", {}):
        return None
    password = stored_key("redis_password", home)
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{state.get('host', '127.0.0.1')}:{state['ports']['redis']}/0"


def _defaulted(ctx: typer.Context, param: typer.CallbackParam) -> bool:
    """Whether the option was left to its default (not on the command line, not from its variable). By name:
    typer ships its own copy of click's ``ParameterSource``."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    return getattr(source, "name", "") in ("DEFAULT", "DEFAULT_MAP")


def _url_from_stack(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    return (stack_api_url() or value) if _defaulted(ctx, param) else value


def _redis_from_stack(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    return (stack_redis_url() or value) if _defaulted(ctx, param) else value


UrlOpt = Annotated[
    str,
    typer.Option(
        envvar="SIEVE_URL",
        callback=_url_from_stack,
        help="API address (default: the stack's, from <home>/stack.json; else this)",
    ),
]
RedisOpt = Annotated[
    str,
    typer.Option(
        envvar="INGEST_REDIS_URL",
        callback=_redis_from_stack,
        help="Redis of the stack, for gate decisions (default: the stack's, with its password; else this)",
    ),
]
KeyOpt = Annotated[str, typer.Option(envvar="SIEVE_API_KEY", help="API key (default: the embedded stack's)")]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="The stack's folder (default: SIEVE_HOME, else the nearest .sieve/ upward, else "
        "~/.local/share/sieve)",
        show_default=False,
    ),
]


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def client(url: str, key: str) -> SieveClient:
    """A client of the API at ``url``; without ``key``, the embedded stack's (``<home>/api_key``)."""
    from api.cli.client import SieveClient

    if not key:
        key = stored_key("api_key") or ""
        if not key:
            raise typer.BadParameter(
                f"no API key: pass --key, set SIEVE_API_KEY, or start `sieve up` first "
                f"(no key in {stack_file('api_key')})"
            )
    return SieveClient(url, key)


def command_line() -> str:
    """The command as typed (``sieve ...``, also ``python -m api.cli ...``), for reports; empty when run
    otherwise (e.g. by a test runner's ``CliRunner``)."""
    invoked = Path(sys.argv[0]).name in {"sieve", "cli.py", "__main__.py"}
    return shlex.join(["sieve", *sys.argv[1:]]) if invoked else ""


def sieve_executable() -> str:
    """How to run ``sieve`` again from this shell: ``sieve`` when that is the one running, else its path (e.g.
    ``.venv/bin/sieve``), else ``python -m api.cli``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "sieve":
        on_path = shutil.which("sieve")
        if on_path and Path(on_path).resolve() == argv0.resolve():
            return "sieve"
        try:
            return shlex.quote(str(argv0.resolve().relative_to(Path.cwd())))
        except ValueError:
            return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m api.cli"
