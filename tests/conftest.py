"""Shared by every tier: no hub access, the tiny-model fixtures (``tests.support.model_fixtures``), pytester
(``tests/unit/test_tiers.py``) and the figures tests report (``tests.support.reporting``) in the summary."""

from __future__ import annotations

import os

# Before transformers/huggingface_hub are imported: a hub id must fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from tests.support.reporting import reported  # noqa: E402

pytest_plugins = ["tests.support.model_fixtures", "pytester"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = reported()
    if lines:
        terminalreporter.section("reported figures")
        for line in lines:
            terminalreporter.write_line(line)
