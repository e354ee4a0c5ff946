"""``sieve keys create|list|revoke|limit``: tenant API keys in the stack's Redis (``api.tenant_keys``), usable
by the running API at once. The Redis is the stack's (from its state file, with its password), or
``--redis-url`` / ``INGEST_REDIS_URL``; the same operations are the admin routes ``/v1/admin/keys``."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from api.cli.common import RedisOpt, console

keys_app = typer.Typer(help="Tenant API keys stored in the stack's Redis.", no_args_is_help=True)


def _store(redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    from api.tenant_keys import TenantKeys

    client = redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )
    return TenantKeys(client)


def _usage(exc: Exception) -> typer.BadParameter:
    return typer.BadParameter(str(exc))


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for")],
    rate: Annotated[float | None, typer.Option(help="The tenant's requests per second (0: no limit)")] = None,
    burst: Annotated[int | None, typer.Option(help="The tenant's burst (default: twice the rate)")] = None,
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """A new key for TENANT, printed once (only its hash is stored); the API accepts it at once."""
    from api.tenant_keys import KeyRequestError

    try:
        key, stored = _store(redis_url).create(tenant, rate=rate, burst=burst)
    except KeyRequestError as exc:
        raise _usage(exc) from exc
    console.print(f"key {stored.id} for tenant {stored.tenant!r} (shown once, keep it):", highlight=False)
    typer.echo(key)


@keys_app.command("list")
def list_keys(redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
    """The stored keys (id, tenant, created; never the key) and the tenants' rate limits."""
    store = _store(redis_url)
    limits = store.limits()
    table = Table("id", "tenant", "created (UTC)", "rate limit")
    for k in store.list():
        limit = limits.get(k.tenant)
        table.add_row(
            k.id,
            k.tenant,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at)),
            limit.describe() if limit else "default",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key, or its id from `sieve keys list`")],
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Revoke a stored key: the API answers 401 to it from the next request."""
    from api.tenant_keys import KeyRequestError

    try:
        stored = _store(redis_url).revoke(key)
    except KeyRequestError as exc:
        raise _usage(exc) from exc
    console.print(f"revoked key {stored.id} of tenant {stored.tenant!r}")


@keys_app.command("limit")
def limit(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    rate: Annotated[float, typer.Option(help="Requests per second (0: no limit)")],
    burst: Annotated[int | None, typer.Option(help="Burst (default: twice the rate)")] = None,
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Set TENANT's rate limit (for every key of it, API_KEYS ones too), without restarting the API."""
    from api.tenant_keys import KeyRequestError

    try:
        lim = _store(redis_url).set_limit(tenant, rate, burst)
    except KeyRequestError as exc:
        raise _usage(exc) from exc
    console.print(f"tenant {tenant!r}: {lim.describe()}")
