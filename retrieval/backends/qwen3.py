"""Qwen3-Embedding through plain transformers (``AutoModel`` + ``AutoTokenizer``).

The recipe of the official model card: the text's tokens, then ``<|endoftext|>``; left padding; the final
hidden state of the last token; L2 normalisation. Queries are ``"Instruct: {task}\\nQuery:{query}"``;
documents get no instruction. ``dimension`` below the model's width keeps a prefix of the vector (Matryoshka,
MRL) and renormalises it.

``max_tokens`` counts the text's tokens (with the instruction, for queries), not the appended
``<|endoftext|>``; longer inputs keep their beginning. The default, 8191 (+1), is the model card's 8192.

Inference runs under ``torch.inference_mode`` in fp32 on CPU and bf16 on CUDA. Inputs are batched by length
(longest first, so an out-of-memory error shows on the first batch) and returned in input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from engine.hub import model_identity, offline_kwargs
from engine.prompts import QWEN3_EMBEDDING_INSTRUCTION, format_query
from retrieval.backends.base import LazyEmbedder
from retrieval.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 8192
EOS_TOKEN = "<|endoftext|>"


def _left_pad(
    sequences: Sequence[list[int]], pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, attention mask and position ids (0 at each sequence's first real token)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


class Qwen3Embedder(LazyEmbedder):
    """Qwen3-Embedding (0.6B/4B/8B) from a local folder or a hub id. Cheap to build; ``warm_up`` loads."""

    family = "qwen3-embedding"

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        max_tokens: int | None = None,
        dimension: int | None = None,
        batch_size: int = 32,
        default_instruction: str = QWEN3_EMBEDDING_INSTRUCTION,
        setting_name: str = "RETRIEVAL_EMBEDDER_MODEL",
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if dimension is not None and dimension < 1:
            raise ValueError(f"dimension must be positive, got {dimension}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model
        self._device = device
        self._max_tokens_setting = max_tokens
        self._dimension_setting = dimension
        self._batch_size = batch_size
        self._default_instruction = default_instruction
        self._setting_name = setting_name
        super().__init__()
        self._tokenizer: Any = None
        self._eos_id = 0
        self._pad_id = 0

    # -- Embedder protocol -------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        return model_identity(self._model_ref)

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        task = self._default_instruction if instruction is None else instruction
        # An explicitly empty instruction means "no instruction" (the query is embedded like a document).
        return self._embed([format_query(t, task) if task else t for t in texts])

    # -- internals ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        source = self._model_ref
        kwargs = offline_kwargs(source)
        dtype = torch.bfloat16 if str(self._device).startswith("cuda") else torch.float32
        started = time.perf_counter()
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                source, padding_side="left", truncation_side="right", **kwargs
            )
            model = AutoModel.from_pretrained(source, dtype=dtype, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise ModelLoadError(
                f"cannot load the Qwen3 embedding model {source!r}: set {self._setting_name} to a local "
                f"folder or a reachable hub id ({type(exc).__name__}: {exc})"
            ) from exc
        model = model.to(self._device).eval()
        eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        if eos_id is None or eos_id == tokenizer.unk_token_id:
            raise ModelLoadError(
                f"{source!r} has no {EOS_TOKEN} token: is {self._setting_name} a Qwen3 model?"
            )
        width = int(model.config.hidden_size)
        if self._dimension_setting is not None and self._dimension_setting > width:
            raise ModelLoadError(
                f"RETRIEVAL_EMBEDDER_DIMENSION={self._dimension_setting} exceeds the model's width {width}"
            )
        limit = min(
            DEFAULT_MAX_LENGTH, int(getattr(model.config, "max_position_embeddings", DEFAULT_MAX_LENGTH))
        )
        if self._max_tokens_setting is not None:
            limit = min(self._max_tokens_setting + 1, int(model.config.max_position_embeddings))
        self._tokenizer = tokenizer
        self._eos_id = int(eos_id)
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id)
        self._dimension = self._dimension_setting or width
        self._max_tokens = limit - 1
        self._model = model
        logger.info(
            "loaded Qwen3 embedder %s on %s (%s, dim %d) in %.1fs",
            source,
            self._device,
            dtype,
            self._dimension,
            time.perf_counter() - started,
        )

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """The recipe's input: the text's tokens (truncated to ``max_tokens``), then ``<|endoftext|>``."""
        encoded = self._tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=self._max_tokens
        )
        return [list(ids) + [self._eos_id] for ids in encoded["input_ids"]]

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        if not texts:
            return out
        started = time.perf_counter()
        sequences = self._token_ids(texts)
        prepared = time.perf_counter()
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                rows = order[start : start + self._batch_size]
                ids, mask, positions = _left_pad([sequences[i] for i in rows], self._pad_id, self._device)
                hidden = self._model(
                    input_ids=ids, attention_mask=mask, position_ids=positions
                ).last_hidden_state
                pooled = hidden[:, -1, : self._dimension].float()
                out[rows] = F.normalize(pooled, p=2, dim=1).cpu().numpy()
        logger.debug(
            "embedded %d texts (%d tokens): prepare %.3fs, forward %.3fs",
            len(texts),
            sum(len(s) for s in sequences),
            prepared - started,
            time.perf_counter() - prepared,
        )
        return out
