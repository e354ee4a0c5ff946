"""Exceptions raised by the inference engine.

EngineError
├── EngineInputError         a request the engine cannot run (a sequence too long, token ids out of
│                            range, more tokens than the whole queue)
├── EngineOverloadedError    the bounded request queue is full; retry later
└── EngineUnavailableError   the model did not load, or the engine was closed, failed or timed out

Each stage's adapter (``retrieval/backends/qwen3_engine.py``, ``reranking/backends/qwen3_engine.py``) turns
these into its own stage's errors, which ``api/errors.py`` maps to HTTP statuses.
"""


class EngineError(Exception):
    """Base class of every error raised by ``engine``."""


class EngineInputError(EngineError):
    """The request cannot be run as given."""


class EngineOverloadedError(EngineError):
    """The engine's request queue is full; the caller should retry later."""


class EngineUnavailableError(EngineError):
    """The engine cannot serve: its model did not load, it was closed, it failed or it timed out."""
