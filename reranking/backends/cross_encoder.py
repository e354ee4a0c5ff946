"""Cross-encoder reranking through sentence-transformers ``CrossEncoder``. Score = sigmoid(logit) in [0, 1].

sentence-transformers applies an activation of its own choosing in ``predict``: Sigmoid by default for a
one-label model, but whatever a model's saved configuration names otherwise (the ms-marco cross-encoders save
Identity, so they return raw logits). To give one scale whatever the folder says, this backend asks for the
raw logit (``activation_fn=Identity``) and applies the sigmoid itself, exactly once. For a causal-LM folder
sentence-transformers scores logit("yes") - logit("no"), whose sigmoid is P("yes").

``max_tokens`` caps the tokens of the (query, document) pair, special tokens included (default: the model's
``max_seq_length``); longer pairs are truncated by the tokenizer (longest first). With ``rank(...,
windows=True)`` a document over that budget is instead split, through the tokenizer's offsets, into windows of
document tokens overlapping as Qwen3's do (``reranking.reranker.window_starts``), every window of every
document is scored in the same ``predict`` call, and each document keeps its best window, reported on its
hit. A window is sent as its text: re-tokenised, it may come out a token or two longer and lose those
tokens to the truncation at the budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.hub import model_identity, model_revision, offline_kwargs
from reranking.errors import RerankInputError, RerankUnavailableError
from reranking.reranker import (
    MIN_WINDOW_TOKENS,
    RankedHit,
    best_first,
    best_windows,
    check_rank_request,
    window_spans,
)

logger = logging.getLogger(__name__)


class CrossEncoderReranker:
    """A one-label ``CrossEncoder`` behind the ``Reranker`` protocol. Cheap to build; ``warm_up`` loads."""

    reorders = True

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        max_tokens: int | None = None,
        batch_size: int = 16,
        setting_name: str = "RERANK_MODEL",
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model
        self._device = device
        self._max_tokens = max_tokens
        self._batch_size = batch_size
        self._setting_name = setting_name
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def name(self) -> str:
        identity = model_identity(self._model_ref)
        return f"cross-encoder:{identity}"

    @property
    def max_tokens(self) -> int | None:
        """The configured token budget per pair; None: the model's own maximum."""
        return self._max_tokens

    @property
    def revision(self) -> str | None:
        """A trained folder's or hub snapshot's revision (``engine.hub.model_revision``); None if unknown."""
        return model_revision(self._model_ref)

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        """``instruction`` is ignored: cross-encoders take none. ``windows``: see the module."""
        check_rank_request(query, top_k)
        if not documents:
            return []
        if not windows:
            return best_first(self.score([(query, doc) for doc in documents]), top_k)
        spans = self.window_spans(query, documents)
        pairs = [(query, doc[a:b]) for doc, own in zip(documents, spans, strict=True) for a, b in own]
        return best_windows(self.score(pairs).tolist(), spans, top_k, report=True)

    def window_spans(self, query: str, documents: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per document, the character spans of its windows: ``[(0, len(doc))]`` for one whose pair with
        ``query`` fits the budget; together a long document's windows cover it, overlapping."""
        self.warm_up()
        tokenizer = self._model.tokenizer
        budget = self._pair_budget()
        if budget is None:
            return [[(0, len(doc))] for doc in documents]
        if not getattr(tokenizer, "is_fast", False):
            raise RerankUnavailableError(
                f"{self._model_ref!r}: windows need a tokenizer with character offsets (a fast tokenizer)"
            )
        query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
        window = budget - query_tokens - tokenizer.num_special_tokens_to_add(pair=True)
        encoded = tokenizer(list(documents), add_special_tokens=False, return_offsets_mapping=True)
        out: list[list[tuple[int, int]]] = []
        for doc, offsets in zip(documents, encoded["offset_mapping"], strict=True):
            if len(offsets) <= max(window, 0):
                out.append([(0, len(doc))])
                continue
            if window < MIN_WINDOW_TOKENS:
                raise RerankInputError(
                    f"the query takes {query_tokens} of the {budget} tokens a (query, document) pair may "
                    "use; shorten the query or raise RERANK_MAX_TOKENS"
                )
            out.append(window_spans(doc, offsets, window))
        return out

    def _pair_budget(self) -> int | None:
        """Tokens per (query, document) pair: ``max_tokens``, else the model's; None when it has none."""
        if self._max_tokens is not None:
            return self._max_tokens
        limit = getattr(self._model, "max_seq_length", None) or self._model.tokenizer.model_max_length
        return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """sigmoid(logit) for each (query, document) pair, in input order."""
        import torch

        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        started = time.perf_counter()
        logits = self._model.predict(
            [list(p) for p in pairs],
            batch_size=self._batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        scores = torch.sigmoid(logits.float().reshape(len(pairs))).cpu().numpy()
        logger.debug("scored %d pairs in %.3fs", len(pairs), time.perf_counter() - started)
        return scores.astype(np.float32)

    def _load(self) -> None:
        from sentence_transformers import CrossEncoder

        source = self._model_ref
        kwargs: dict[str, Any] = offline_kwargs(source)
        if self._max_tokens is not None:
            kwargs["max_length"] = self._max_tokens
        started = time.perf_counter()
        try:
            model = CrossEncoder(source, device=self._device, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise RerankUnavailableError(
                f"cannot load the cross-encoder {source!r}: set {self._setting_name} to a local folder or a "
                f"reachable hub id ({type(exc).__name__}: {exc})"
            ) from exc
        if model.num_labels != 1:
            raise RerankUnavailableError(
                f"{source!r} has {model.num_labels} labels; {self._setting_name} must name a one-label "
                "cross-encoder (a relevance score per pair)"
            )
        self._model = model
        logger.info(
            "loaded cross-encoder %s on %s in %.1fs", source, self._device, time.perf_counter() - started
        )
