"""``python -m tests.reliability [--quick | --full] [--out FILE] [--only ingest,replay,...] [--keep]``

Runs the suite against a stack of its own, prints the figures table, writes it to ``--out`` (default
``tests/reliability/results.md``) and exits 1 if any figure misses the issue's goal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from tests.reliability.runner import KEYS, RESULTS, run
from tests.reliability.scenarios.common import FULL, QUICK, override


def _interrupt(signum: int, frame: object) -> None:
    """The first SIGTERM interrupts the run; later ones are ignored so that the clean-up can finish."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--full", action="store_true", help="the issue's counts (1,000 documents, ...): about an hour"
    )
    mode.add_argument("--quick", action="store_true", help="reduced counts (the default): a few minutes")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"where to write the table (default {RESULTS})"
    )
    parser.add_argument("--only", default="", help=f"comma-separated scenarios to run, of: {', '.join(KEYS)}")
    parser.add_argument("--keep", action="store_true", help="keep the stack's home folder (logs) afterwards")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a count of the profile, e.g. --set docs=30 (fields: Profile in scenarios/common.py)",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(KEYS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(KEYS)}")
    # Ctrl-C and SIGTERM (a CI timeout) stop the stack the suite started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # the suite's own probes of a killed Milvus
    try:
        profile = override(FULL if args.full else QUICK, args.set)
    except ValueError as exc:
        parser.error(str(exc))
    outcome = asyncio.run(run(profile, only=only or None, keep=args.keep, out=args.out))
    sys.stdout.write(outcome.markdown)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
