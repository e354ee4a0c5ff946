"""How the models of one process share its CPU cores with each other and with the event loop.

A search embeds its query on the thread that runs it, and several searches run at once (``API_SEARCH_
CONCURRENCY``). torch gives every operator all the cores by default, so two searches at once ask for twice the
cores the box has: on 2 cores, two concurrent MiniLM query embeddings served fewer searches per second than
one at a time (measured by ``python -m tests.reliability --only overload``). ``share_cores`` gives each of
``concurrency`` concurrent callers its share instead. A one-query embedding is a few small products that gain
nothing from more threads.

``gil_switch_interval`` shortens how long a thread running Python may keep the GIL while another waits (the
default, 5 ms, is added to the event loop's every wake-up while a search thread runs Python code).

torch is never imported here: a process that has not loaded it has no torch threads to set.
"""

from __future__ import annotations

import os
import sys


def cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_caller(concurrency: int, available: int | None = None) -> int:
    """Each of ``concurrency`` concurrent callers' share of the cores, at least 1."""
    return max(1, (available if available is not None else cores()) // max(1, concurrency))


def share_cores(threads: int) -> int | None:
    """Set torch's intra-op threads to ``threads`` when this process has loaded torch; returns what was set
    (None: torch not loaded, nothing to do)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    torch.set_num_threads(max(1, threads))
    return int(torch.get_num_threads())


def gil_switch_interval(ms: float) -> None:
    """``sys.setswitchinterval`` in milliseconds (0 or less: leave Python's default)."""
    if ms > 0:
        sys.setswitchinterval(ms / 1000)
