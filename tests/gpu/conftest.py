"""GPU tier: needs the lent CUDA GPU (``pytest -m gpu tests/gpu``); every test here skips without one."""

from __future__ import annotations

import os

# Before transformers/huggingface_hub are imported: nothing here may reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if available:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (the gpu tier runs on the lent device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
