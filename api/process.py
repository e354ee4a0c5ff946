"""How a serving process sets up its interpreter once its models are loaded: the API and ``sieve
rerank-server`` alike.

- ``gil_switch``: a thread running Python keeps the GIL at most ``API_GIL_SWITCH_MS`` (0.5) while another
  waits (Python's own 5 ms otherwise). The event loop (which answers 429s and /health) and the engine's
  batcher (which gives the GIL back and takes it again at each of the hundreds of kernel launches of a
  batch) wait that long each time another thread computes in Python. ``tests/benchmarks/bench_gil.py``
  (``results/bench_gil_cpu.md``): a batcher of 450 torch calls, then 3 ms for the device, ran 322 batches/s
  alone; beside 8 threads each busy in Python 10 % of the time, 209 at 5 ms and 268 at 0.5 ms; beside 16,
  2 (its launches took 568 ms a batch) and 159.
- ``share_cores`` (the API): concurrent searches share the cores (``API_TORCH_THREADS``; see ``engine.cpu``).
- ``freeze_startup_heap``: what start-up built is left out of every later garbage collection.
"""

from __future__ import annotations

import gc
import logging
import threading

from api.settings import ApiSettings
from engine import cpu

logger = logging.getLogger(__name__)


def gil_switch(api: ApiSettings) -> None:
    """The GIL's switch interval from ``API_GIL_SWITCH_MS`` (0: Python's default)."""
    cpu.gil_switch_interval(api.gil_switch_ms)


def share_cores(api: ApiSettings) -> None:
    """Concurrent searches share the cores (``API_TORCH_THREADS``), and the event loop gets the GIL back soon
    (``API_GIL_SWITCH_MS``); see ``engine.cpu``."""
    threads = api.torch_threads or cpu.threads_per_caller(api.search_concurrency)
    gil_switch(api)
    if (set_to := cpu.share_cores(threads)) is not None:
        logger.info(
            "torch: %d thread(s) per operator (%d searches at once on %d cores; API_TORCH_THREADS)",
            set_to,
            api.search_concurrency,
            cpu.cores(),
        )


def freeze_startup_heap() -> None:
    """Leave what start-up built (the libraries, the models: millions of objects that live as long as the
    process) out of every later garbage collection (``gc.freeze``). A full collection walked them all: under
    load one took 245 ms, during which the event loop answered nothing (429s at p99 200 ms in the reliability
    suite's overload scenario; 10 ms frozen). Once per process: a process that builds several apps (tests)
    freezes only the first start-up's heap."""
    if _frozen.is_set():
        return
    _frozen.set()
    gc.collect()
    gc.freeze()


_frozen = threading.Event()
