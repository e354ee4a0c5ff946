"""What every embedder backend shares: a cheap ``__init__``, a thread-safe idempotent ``warm_up`` that calls
the backend's ``_load``, and facts (dimension, token limit) known once loaded. Hub access: ``engine.hub``."""

from __future__ import annotations

import threading
from typing import Any


class LazyEmbedder:
    """Base of the embedder backends. Subclasses set ``_model``, ``_dimension`` and ``_max_tokens`` in
    ``_load`` and name themselves with ``family`` and ``identity``."""

    family = "embedder"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None
        self._dimension = 0
        self._max_tokens = 0

    @property
    def identity(self) -> str:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self.family}:{self.identity}:{self.dimension}"

    @property
    def dimension(self) -> int:
        self.warm_up()
        return self._dimension

    @property
    def max_tokens(self) -> int:
        self.warm_up()
        return self._max_tokens

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        raise NotImplementedError
