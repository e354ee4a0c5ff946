"""engine.cpu: concurrent callers share the cores; the API sets torch threads from its search concurrency."""

from __future__ import annotations

import sys

import pytest

from api.process import share_cores as api_share_cores
from api.settings import ApiSettings
from engine import cpu


@pytest.mark.parametrize(
    ("concurrency", "available", "expected"),
    [(1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 16, 8), (3, 16, 5), (0, 4, 4)],
)
def test_each_concurrent_caller_gets_its_share_of_the_cores_and_at_least_one(
    concurrency: int, available: int, expected: int
) -> None:
    assert cpu.threads_per_caller(concurrency, available) == expected


def test_cores_counts_the_cores_this_process_may_use() -> None:
    assert 1 <= cpu.cores() <= (__import__("os").cpu_count() or 1)


@pytest.fixture
def restore_torch_threads():
    import torch

    before, interval = torch.get_num_threads(), sys.getswitchinterval()
    yield torch
    torch.set_num_threads(before)
    sys.setswitchinterval(interval)


def test_share_cores_sets_torch_threads_when_torch_is_loaded(restore_torch_threads) -> None:
    assert cpu.share_cores(1) == 1
    assert restore_torch_threads.get_num_threads() == 1


def test_share_cores_does_nothing_without_torch_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert cpu.share_cores(1) is None


def test_gil_switch_interval_in_milliseconds_and_zero_keeps_it() -> None:
    before = sys.getswitchinterval()
    try:
        cpu.gil_switch_interval(0.5)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        cpu.gil_switch_interval(0)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)


def test_api_gives_each_concurrent_search_its_share_unless_told(restore_torch_threads) -> None:
    torch = restore_torch_threads
    api_share_cores(ApiSettings(search_concurrency=cpu.cores(), gil_switch_ms=1.0))
    assert torch.get_num_threads() == 1
    assert sys.getswitchinterval() == pytest.approx(0.001)
    api_share_cores(ApiSettings(search_concurrency=1, torch_threads=3, gil_switch_ms=0))
    assert torch.get_num_threads() == 3


def test_the_api_freezes_its_startup_heap_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import threading

    from api import process as app_module

    monkeypatch.setattr(app_module, "_frozen", threading.Event())
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    app_module.freeze_startup_heap()
    app_module.freeze_startup_heap()
    assert calls == ["freeze"]
