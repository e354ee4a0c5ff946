"""What the deployment tests share: the environment variables Sieve's settings classes declare, the check of
a manifest's variables against them, compose-style interpolation, and the check that a command line parses
with the ``sieve`` CLI.

A variable is *Sieve's* when it starts with the env prefix of one of the settings classes (``API_``,
``INGEST_``, ``RETRIEVAL_``, ``RERANK_``, read from the classes themselves); such a variable in a manifest
must be a field of that class, so renaming a setting without the manifests (or a typo in them) fails.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import typer
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("engine", "retrieval", "reranking", "ingestion", "api")


SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEYS?$|_AUTH$|ACCESS_KEY)")


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class defined in a ``settings.py`` of the packages."""
    found: list[type[BaseSettings]] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("settings.py")):
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(obj, BaseSettings)
                    and obj is not BaseSettings
                    and obj.__module__ == module.__name__
                ):
                    found.append(obj)
    return found


def declared_env() -> tuple[frozenset[str], tuple[str, ...]]:
    """(every variable the settings classes read, their prefixes), upper case."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        if prefix:
            prefixes.add(prefix)
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names.update(str(a).upper() for a in alias.choices if isinstance(a, str))
            else:
                names.add(f"{prefix}{field_name}".upper())
    return frozenset(names), tuple(sorted(prefixes))


def unknown_sieve_vars(names: Iterable[str], *, allowed: frozenset[str] = frozenset()) -> list[str]:
    """The names among ``names`` that carry a settings prefix but that no settings class declares."""
    declared, prefixes = declared_env()
    return sorted(
        {
            n
            for n in names
            if n.upper().startswith(prefixes) and n.upper() not in declared and n.upper() not in allowed
        }
    )


# -- compose interpolation (the subset compose files use) ---------------------------------------------------
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is unset or empty."""


def interpolate(value: object, env: Mapping[str, str]) -> object:
    """``value`` (a parsed YAML tree) with ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?message}`` and ``${VAR?message}`` replaced as docker compose does."""
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"] or "", match["arg"] or ""
        present = name in env
        empty = not env.get(name)
        if op in (":?", "?") and (not present or (op == ":?" and empty)):
            raise InterpolationError(f"{name}: {arg or 'required'}")
        if op == ":-" and empty or op == "-" and not present:
            return arg
        return env.get(name, "")

    return _VAR.sub(one, value)


def variables(value: object) -> set[str]:
    """The variable names a YAML tree interpolates."""
    if isinstance(value, dict):
        return set().union(*(variables(k) | variables(v) for k, v in value.items())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables(v) for v in value)) if value else set()
    if not isinstance(value, str):
        return set()
    return {m["braced"] or m["plain"] for m in _VAR.finditer(value) if not m["escaped"]}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (comments and blank lines skipped, one level of quotes removed)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


# -- the CLI ------------------------------------------------------------------------------------------------
class CliArgsError(ValueError):
    """A command line the ``sieve`` CLI would refuse (unknown command or option, a bad value)."""


def check_cli(argv: list[str]) -> None:
    """Raise ``CliArgsError`` unless ``argv`` (``sieve ...``) names a command of the ``sieve`` CLI with
    options it takes; nothing runs. (Typer may carry its own copy of click, so its classes are used as
    found.)"""
    from api.cli import app

    assert argv[0] == "sieve", argv
    group = typer.main.get_command(app)
    with group.make_context("sieve", [], resilient_parsing=True) as parent:
        command = group.get_command(parent, argv[1])  # type: ignore[attr-defined] # a group
        if command is None:
            raise CliArgsError(f"no command {argv[1]!r} in the sieve CLI")
        try:
            with command.make_context(argv[1], list(argv[2:]), parent=parent):
                pass
        except Exception as exc:  # noqa: BLE001 - click's usage errors, whichever click typer uses
            raise CliArgsError(f"{' '.join(argv)}: {exc}") from exc
