"""The accelerators this process sees, for launchers that start one model server per GPU.

``visible_cuda_devices()`` names them as torch does (``cuda:0`` … ``cuda:N-1``, after
``CUDA_VISIBLE_DEVICES``); torch is imported only when it is called.
"""

from __future__ import annotations


def visible_cuda_devices() -> list[str]:
    """``["cuda:0", …]`` for every GPU torch can use here; empty without CUDA (or without torch)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
