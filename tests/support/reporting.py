"""Figures a test reports beside its verdict (GPU timings and errors, the fuzz's answers per status).

``report(line)`` logs the line (``tests.report``, shown with a failing test's captured log) and keeps it for
the run's summary, where ``tests/conftest.py`` prints every reported line under "reported figures", so
they show without ``-s``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("tests.report")

_lines: list[str] = []


def report(line: str) -> None:
    logger.info("%s", line)
    _lines.append(line)


def reported() -> list[str]:
    return list(_lines)
