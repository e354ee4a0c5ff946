"""What every embedder backend shares: a cheap ``__init__``, a thread-safe idempotent ``warm_up`` that calls
the backend's ``_load``, facts (dimension, token limit) known once loaded, and hub-access helpers."""

from __future__ import annotations

import os
import threading
from typing import Any


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (read at call time)."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().upper() in {"1", "ON", "YES", "TRUE"} for v in values)


def model_identity(model: str) -> str:
    """A stable name for a model: the folder's name for a local path, the hub id otherwise."""
    if os.path.isdir(model):
        return os.path.basename(os.path.normpath(os.path.abspath(model)))
    return model


def load_kwargs(model: str) -> dict[str, Any]:
    """``local_files_only`` for a hub id while the hub is switched off, so a miss fails at once."""
    return {} if os.path.isdir(model) or not hub_offline() else {"local_files_only": True}


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
