"""``sieve gate apply|show|clear``: a tenant's rerank-gate decision in the stack's Redis
(``api.rerank_gate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli.common import RedisOpt, console

if TYPE_CHECKING:
    from api.rerank_gate import GateStore

gate_app = typer.Typer(
    help="The gates (stage 1 and rerank): store, show or clear a tenant's decision.", no_args_is_help=True
)
TenantOpt = Annotated[str, typer.Option(help="Tenant (the embedded stack's is 'default')")]


def gate_store(redis_url: str) -> GateStore:
    import redis

    from api.rerank_gate import GateStore

    return GateStore(redis.Redis.from_url(redis_url, decode_responses=True))


@gate_app.command("apply")
def gate_apply(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="gate.json from `sieve eval --gate`")
    ],
    tenant: TenantOpt = "default",
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Store a decision for a tenant; search follows it at once (API_RERANK_GATE=evaluated)."""
    from api.gate_decision import GateDecision

    decision = GateDecision.model_validate_json(path.read_text(encoding="utf-8"))
    gate_store(redis_url).put(tenant, decision)
    if decision.stage1 is not None:
        stage1 = decision.stage1
        verdict = "learned" if stage1.adopted else "default kept"
        console.print(f"tenant {tenant!r}: stage 1 {stage1.serving.label} ({verdict}) — {stage1.reason}")
    console.print(
        f"tenant {tenant!r}: rerank stage {'enabled' if decision.enabled else 'disabled'} — {decision.reason}"
    )


@gate_app.command("show")
def gate_show(tenant: TenantOpt = "default", redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
    """Print a tenant's stored decision (JSON)."""
    decision = gate_store(redis_url).get(tenant)
    if decision is None:
        console.print(
            f"tenant {tenant!r}: no decision stored "
            "(under API_RERANK_GATE=evaluated, search runs stage 1 only)"
        )
        raise typer.Exit(1)
    console.print_json(decision.model_dump_json(exclude={"grid": True, "stage1": {"grid"}}))


@gate_app.command("clear")
def gate_clear(tenant: TenantOpt = "default", redis_url: RedisOpt = "redis://127.0.0.1:6390/0") -> None:
    """Remove a tenant's decision (search then runs stage 1 only under API_RERANK_GATE=evaluated)."""
    removed = gate_store(redis_url).delete(tenant)
    console.print(f"tenant {tenant!r}: {'decision removed' if removed else 'no decision was stored'}")
