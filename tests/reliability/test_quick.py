"""The reliability suite in small (a few minutes): every scenario but the overload one, with fewer documents,
kills and requests. Asserts the correctness figures only (nothing accepted is lost, no duplicate chunk,
no foreign object, no 5xx other than the documented 503); timings, latencies and memory are figures of the
table (``python -m tests.reliability``), not assertions."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.reliability.runner import run
from tests.reliability.scenarios.common import QUICK

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = replace(
    QUICK,
    name="pytest",
    docs=12,
    kill_every_s=(3.0, 6.0),
    outage_docs=8,
    outage_s=2.0,
    outage_kills=2,
    query_phase_s=2.0,
    tamper_requests=250,
    hostile_inputs=150,
    schemathesis_examples=2,
    bomb_mib=100,
    bomb_wait_s=20.0,
    big_bodies=False,
    settle_s=120.0,  # the longest a job may wait for terminal before it counts as lost (retries back off)
)


@pytest.mark.timeout(900)
def test_nothing_lost_duplicated_leaked_or_5xx(tmp_path: Path) -> None:
    outcome = asyncio.run(
        run(
            SMALL,
            only=["ingest", "replay", "tenants", "redis", "milvus", "hostile"],
            out=tmp_path / "results.md",
        )
    )
    sys.stdout.write(outcome.markdown)  # the table, with -s
    broken = [f"{row.title}: {row.error}" for row in outcome.rows if row.error]
    assert not broken, broken
    missed = [
        f"{row.title}: {figure.name} = {figure.value} ({' / '.join(row.counts)})"
        for row in outcome.rows
        for figure in row.figures
        if figure.correctness and figure.ok is False
    ]
    assert not missed, "\n".join(missed)
