"""The GPU inference engine for Qwen3-shaped models, and the model helpers both stages share.

``engine`` is a leaf: it imports none of ``retrieval``, ``reranking``, ``ingestion`` or ``api``; the stages'
backends use it (``retrieval/backends/qwen3_engine.py`` embeds, ``reranking/backends/qwen3_engine.py``
reranks). Importing the package loads no torch: ``engine.engine`` and the modules under it do.

Modules: ``engine`` (the scheduler: bounded request queue, batches, worker threads), ``runner`` (the packed
forward, kernels' choice, graphs, warm-up), ``attention``, ``graphs``, ``triton_kernels``, ``qwen3_math``;
``hub`` (offline switch, model identity and revision) and ``prompts`` (default instructions) need no torch.

Exceptions (``engine.errors``):

EngineError
├── EngineInputError         a request the engine cannot run (bad lengths or token ids, larger than the queue)
├── EngineOverloadedError    the bounded request queue is full; retry later
└── EngineUnavailableError   the model did not load, or the engine was closed, failed or timed out
"""

from engine.errors import EngineError, EngineInputError, EngineOverloadedError, EngineUnavailableError

__all__ = ["EngineError", "EngineInputError", "EngineOverloadedError", "EngineUnavailableError"]
