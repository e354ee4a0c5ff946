"""The order of the run: start the stack and the probes, run each scenario, render and write the table.

Scenarios run in this order, so that the ones that leave a process busy for a long time where the issue's
fixes are missing (a bomb holding the worker, a huge body held by the API) come last:
ingest, replay, tenants, overload, redis, milvus, hostile. A scenario that raises is a failed row with the
reason; the others still run.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.reliability import report
from tests.reliability.harness import Api, Harness
from tests.reliability.probes import Probes, Window
from tests.reliability.report import Row
from tests.reliability.scenarios import hostile, ingest, outages, overload, tenants
from tests.reliability.scenarios.common import Context, Profile

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results.md"
GIB = 1024 * 1024  # kB per GiB
API_RSS_GOAL_KB = 1.5 * GIB
HEALTH_P99_GOAL_MS = 100.0

# Settings of the stack under test beyond the tenants' keys (shown in the table header). A killed worker's
# unacknowledged task comes back after the visibility timeout: 20 s here (600 by default) so that a run does
# not wait ten minutes per kill; every other setting is the product's default.
STACK_ENV = {
    "INGEST_VISIBILITY_TIMEOUT_S": "20",
    "INGEST_RESTORE_INTERVAL_S": "2",
    "INGEST_RETRY_BACKOFF_S": "1",
}

Scenario = Callable[[Context], Awaitable[Row]]
SCENARIOS: list[tuple[str, str, Scenario]] = [
    ("ingest", "ingest under kill -9 of the worker", ingest.ingest_under_kills),
    ("replay", "replay every upload x3", ingest.replay),
    ("tenants", "cross-tenant tampering", tenants.tamper),
    ("overload", "overload at 2x saturation on /v1/search", overload.overload),
    ("redis", "Redis killed mid-ingest and mid-query", outages.redis_outage),
    ("milvus", "Milvus Lite killed mid-ingest and mid-query", outages.milvus_outage),
    ("hostile", "hostile inputs", hostile.hostile),
]
KEYS = [key for key, _, _ in SCENARIOS]


@dataclass
class Outcome:
    rows: list[Row]
    markdown: str

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def correctness_passed(self) -> bool:
        return all(r.correctness_passed for r in self.rows)


def _mib(kb: int | None) -> str:
    return "n/a" if not kb else f"{kb / 1024:.0f} MiB"


def _throughout_cells(name: str, window: Window) -> list[str]:
    return [
        name,
        str(window.probes),
        report.fmt(window.p50_ms, " ms", 1),
        report.fmt(window.p99_ms, " ms", 1),
        report.fmt(window.max_ms, " ms", 0),
        str(window.failed),
        _mib(window.rss_kb.get("api")),
        _mib(window.rss_kb.get("worker")),
    ]


def whole_run_row(window: Window) -> Row:
    api_kb = window.rss_kb.get("api")
    worker_kb, worker_top = window.rss_kb.get("worker"), window.top_kb.get("worker")
    row = Row("throughout", "the whole run (probes)")
    row.done = (
        "a separate process probed GET /health every 100-200 ms (open loop, 30 s timeout) and summed VmRSS "
        "over each service's process tree every 0.5 s, from the stack's start to its stop"
    )
    row.counts = [f"{window.probes} /health probes, {window.failed} without a 200"]
    row.figures = [
        report.at_most("/health p99", window.p99_ms, HEALTH_P99_GOAL_MS, " ms", 1),
        report.at_most("API RSS max", api_kb / 1024 if api_kb else None, API_RSS_GOAL_KB / 1024, " MiB", 0),
        report.info(
            "worker RSS max",
            f"{_mib(worker_kb)} (largest process {_mib(worker_top)}; goal: under the documented cap)",
        ),
        report.info("/health max", window.max_ms, " ms", 0),
    ]
    return row


async def run(
    profile: Profile, *, only: list[str] | None = None, keep: bool = False, out: Path | None = RESULTS
) -> Outcome:
    started_at = dt.datetime.now(dt.UTC).astimezone()
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="sieve-reliability-"))
    harness = Harness(home / "stack", extra_env=STACK_ENV)
    probes = Probes(home / "probes")
    rows: list[Row] = []
    phases: list[tuple[str, float, float]] = []
    run_start = time.time()
    logger.info("starting the stack in %s", home)
    api: Api | None = None
    try:
        harness.start()  # from the main thread: the stack's children die with the thread that started them
        probes.start(harness.api_url, harness.roots())
        api = Api(harness.api_url)
        ctx = Context(harness=harness, api=api, probes=probes, profile=profile)
        for key, title, scenario in SCENARIOS:
            if only and key not in only:
                continue
            logger.info("scenario %s: %s", key, title)
            t0, m0 = time.time(), time.monotonic()
            try:
                row = await scenario(ctx)
            except Exception as exc:  # a broken scenario is a failed row; the others still run
                logger.exception("scenario %s did not finish", key)
                row = Row(key, title, error=f"{type(exc).__name__}: {exc}"[:500])
                row.counts.append(traceback.format_exc(limit=2).splitlines()[-1][:300])
            row.seconds = time.monotonic() - m0
            rows.append(row)
            phases.append((row.title, t0, time.time()))
            logger.info("scenario %s: %s in %.0f s", key, "PASS" if row.passed else "FAIL", row.seconds)
            ctx.refresh_roots()
    finally:
        # Synchronous on purpose: this also runs when the run is interrupted (Ctrl-C, SIGTERM).
        probes.stop()
        harness.stop()
        if api is not None:
            await api.close()
    records = probes.records()
    whole = probes.window(run_start, time.time(), records)
    rows.append(whole_run_row(whole))
    rows[-1].seconds = time.time() - run_start
    throughout = [_throughout_cells(title, probes.window(t0, t1, records)) for title, t0, t1 in phases]
    throughout.append(_throughout_cells("whole run", whole))
    markdown = report.render(
        rows,
        mode=profile.name,
        commit=report.git_commit(ROOT),
        started=started_at,
        seconds=time.monotonic() - started,
        config=[
            "api.cli.stack.Stack (own Redis with append-only file, Milvus Lite server, 1 Celery worker, "
            "uvicorn API) on free ports in a temporary home",
            "3 tenants + admin key; product defaults except "
            + ", ".join(f"{k}={v}" for k, v in STACK_ENV.items()),
        ],
        throughout=throughout,
    )
    if out is not None:
        out.write_text(markdown, encoding="utf-8")
    if keep:
        logger.info("kept the stack's home: %s", home)
    else:
        shutil.rmtree(home, ignore_errors=True)
    return Outcome(rows, markdown)
