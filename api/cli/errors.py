"""The one place the ``sieve`` command line turns an error into a message and an exit code.

Every command runs inside ``SieveGroup.invoke``: an exception that reaches it is printed as one line saying
what failed and what to do, and the command exits with a code scripts can test:

    0  success
    1  failure (the API refused a request, a file could not be read, a job failed, anything unforeseen)
    2  usage (a bad option or argument, e.g. ``--metadata`` that is not JSON, no API key to be found)
    3  cannot reach the stack (the API or its Redis refused or timed out the connection)
  130  interrupted (Ctrl-C)

``sieve --debug <command>`` (or ``SIEVE_DEBUG=1``) prints the traceback as well.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)
_debug = False


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debug_enabled() -> bool:
    return _debug or os.environ.get("SIEVE_DEBUG", "") not in ("", "0")


def _url_of(exc: Any) -> str:
    try:
        return str(exc.request.url.copy_with(query=None))
    except (AttributeError, RuntimeError):
        return "the API"


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc``."""
    import httpx

    from api.cli.client import SieveClientError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, httpx.TimeoutException):
        return EXIT_UNREACHABLE, (
            f"cannot reach the stack: {_url_of(exc)} did not answer in time. Check it with `sieve status`; "
            "a busy API answers again in a moment"
        )
    if isinstance(exc, httpx.TransportError):
        return EXIT_UNREACHABLE, (
            f"cannot reach the stack at {_url_of(exc)} ({type(exc).__name__}). Is it up? "
            "`sieve status` says; start it with `sieve up`, or point --url / SIEVE_URL at a running API"
        )
    if _is_redis_connection_error(exc):
        return EXIT_UNREACHABLE, (
            f"cannot reach the stack's Redis ({exc}). Is the stack up? `sieve status` says; pass --redis-url "
            "for another Redis"
        )
    if isinstance(exc, SieveClientError):
        if exc.status == 401:
            return EXIT_FAILURE, (
                f"the API refused the key (401: {exc.message}). Pass the right one with --key or "
                "SIEVE_API_KEY (`sieve keys create` makes one for a tenant)"
            )
        if exc.status == 403:
            return EXIT_FAILURE, f"not allowed (403: {exc.message}): this needs the admin key"
        if exc.status == 503:
            return EXIT_FAILURE, f"the API cannot serve this now (503): {exc.message}"
        return EXIT_FAILURE, f"the API answered {exc.status}: {exc.message}"
    if isinstance(exc, json.JSONDecodeError):
        return (
            EXIT_USAGE,
            f"not valid JSON ({exc.msg} at character {exc.pos}): check the JSON option you passed",
        )
    if isinstance(exc, OSError) and exc.filename:
        return EXIT_FAILURE, f"{exc.filename}: {exc.strerror or exc}"
    return EXIT_FAILURE, f"{type(exc).__name__}: {exc} (run `sieve --debug ...` for the traceback)"


def _is_redis_connection_error(exc: BaseException) -> bool:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis ships with the api extra
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


def _is_cli_control(exc: BaseException) -> bool:
    """typer/click's own exits, aborts and usage errors: click prints those itself."""
    return type(exc).__module__.split(".")[0] in ("typer", "click")


class SieveGroup(typer.core.TyperGroup):
    """The ``sieve`` group: runs the command, turning an error into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:
            if _is_cli_control(exc):
                raise
            code, message = describe(exc)
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
            err_console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
            raise typer.Exit(code) from None
