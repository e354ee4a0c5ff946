"""Qwen3-Reranker (0.6B/4B/8B) through plain transformers. Score = P("yes") in [0, 1].

The official template, assembled at the token level: ``PREFIX`` tokens + body tokens + ``SUFFIX`` tokens,
where the body is ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}``. Prefix and suffix are
never cut. ``max_tokens`` is the length of the whole sequence (default 8192, the model card's ``max_length``).

A document whose body does not fit is not cut: it is split into windows of document tokens, each behind the
same instruction and query, overlapping by an eighth of a window, and scored by its best window. A body that
fits gives exactly the model card's input, and a long document's first window is the model card's truncated
input. With ``rank(..., windows=True)`` each hit carries the window that won, its characters found through the
tokenizer's offsets (``prepare_windows``).

Only the two LM-head rows of "no" and "yes" are computed: the base model's final hidden state at the last
position times ``lm_head.weight[[no, yes]]``, then a softmax over the pair. Three stages: ``prepare`` (CPU:
template, tokenize, windows), ``score_sequences`` (forward), and the reduction to sorted ``RankedHit``s.
``load_template`` loads what ``prepare`` needs without the model (the inference engine serves the model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.hub import model_identity, model_revision, offline_kwargs
from engine.prompts import QWEN3_RERANKER_INSTRUCTION
from engine.tokens import batch_ids, rust_backend
from reranking.errors import RerankInputError, RerankUnavailableError
from reranking.reranker import (
    MIN_WINDOW_TOKENS,
    RankedHit,
    best_windows,
    check_rank_request,
    window_starts,
)

logger = logging.getLogger(__name__)

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_MAX_LENGTH = 8192


def format_body(query: str, doc: str, instruction: str) -> str:
    """The official body: ``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}``."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


class Qwen3Reranker:
    """Qwen3-Reranker from a local folder or a hub id. Cheap to build; ``warm_up`` loads."""

    reorders = True

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        max_tokens: int | None = None,
        batch_size: int = 16,
        default_instruction: str = QWEN3_RERANKER_INSTRUCTION,
        setting_name: str = "RERANK_MODEL",
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model
        self._device = device
        self._max_length = max_tokens or DEFAULT_MAX_LENGTH
        self._batch_size = batch_size
        self._default_instruction = default_instruction
        self._setting_name = setting_name
        self._lock = threading.RLock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._head: Any = None  # (2, hidden): the LM-head rows of "no" and "yes"
        self._prefix_ids: list[int] = []
        self._suffix_ids: list[int] = []
        self._pad_id = 0
        self._no_yes = (0, 0)

    @property
    def name(self) -> str:
        identity = model_identity(self._model_ref)
        return f"qwen3-reranker:{identity}"

    @property
    def max_tokens(self) -> int:
        return self._max_length

    @property
    def revision(self) -> str | None:
        """A trained folder's or hub snapshot's revision (``engine.hub.model_revision``); None if unknown."""
        return model_revision(self._model_ref)

    @property
    def head_token_ids(self) -> tuple[int, int]:
        """The token ids of "no" and "yes" (after ``load_template``)."""
        self.load_template()
        return self._no_yes

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def load_template(self) -> None:
        """Load the tokenizer and the template's token ids, not the model: all that ``prepare`` needs (for a
        backend that serves the model itself, such as the inference engine). Idempotent."""
        if self._tokenizer is not None:
            return
        with self._lock:
            if self._tokenizer is None:
                self._load_tokenizer()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        """Every document by its best window (one for a body that fits); ``windows`` reports the winner."""
        check_rank_request(query, top_k)
        if not documents:
            return []
        started = time.perf_counter()
        sequences, spans = self.prepare_windows(query, documents, instruction=instruction)
        flat = [seq for doc_windows in sequences for seq in doc_windows]
        prepared = time.perf_counter()
        scores = self.score_sequences(flat)
        scored = time.perf_counter()
        hits = best_windows(scores.tolist(), spans, top_k, report=windows)
        logger.debug(
            "reranked %d documents (%d sequences, %d tokens): prepare %.3fs, forward %.3fs",
            len(documents),
            len(flat),
            sum(len(s) for s in flat),
            prepared - started,
            scored - prepared,
        )
        return hits

    # -- stages ------------------------------------------------------------------------------------------
    def prepare(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> list[list[list[int]]]:
        """Token ids to score, per document: one sequence, or several windows for a long document."""
        return self.prepare_windows(query, documents, instruction=instruction)[0]

    def prepare_windows(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> tuple[list[list[list[int]]], list[list[tuple[int, int]]]]:
        """``prepare``'s sequences and, per document, each window's character span in the document (from
        the tokenizer's offsets): ``(0, len(doc))`` for a body that fits."""
        self.load_template()
        task = self._default_instruction if instruction is None else instruction
        budget = self._max_length - len(self._prefix_ids) - len(self._suffix_ids)
        head_chars = len(format_body(query, "", task))
        bodies = [format_body(query, doc, task) for doc in documents]
        out: list[list[list[int]]] = []
        spans: list[list[tuple[int, int]]] = []
        encoded, offsets_of = self._encode(bodies)
        for k, (doc, ids) in enumerate(zip(documents, encoded, strict=True)):
            if len(ids) <= budget:
                out.append([self._prefix_ids + ids + self._suffix_ids])
                spans.append([(0, len(doc))])
                continue
            offsets = offsets_of(k)
            # The head (instruction, query) is every token before the first holding a document character.
            split = next((i for i, (_, end) in enumerate(offsets) if end > head_chars), len(ids))
            head, doc_ids, doc_offsets = ids[:split], ids[split:], offsets[split:]
            window = budget - len(head)
            if window < MIN_WINDOW_TOKENS:
                raise RerankInputError(
                    f"the query and instruction take {len(head)} of the {budget} tokens a (query, document) "
                    "pair may use; shorten the query or raise RERANK_MAX_TOKENS"
                )
            starts = window_starts(len(doc_ids), window)
            out.append(
                [
                    self._prefix_ids + head + doc_ids[start : start + window] + self._suffix_ids
                    for start in starts
                ]
            )
            spans.append([_span(doc_offsets, start, window, head_chars, len(doc)) for start in starts])
        return out, spans

    def _encode(
        self, bodies: list[str]
    ) -> tuple[list[list[int]], Callable[[int], Sequence[tuple[int, int]]]]:
        """Token ids of each body (no special tokens) and a function giving a body's character offsets,
        which only a body over the budget needs (through the Rust backend where it can be called,
        ``engine.tokens``: that body is encoded again for them; the offsets of 50 bodies that fit would cost
        ~1 ms as Python tuples)."""
        backend = rust_backend(self._tokenizer)
        if backend is None:
            encoded = self._tokenizer(
                bodies, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            offsets = list(encoded["offset_mapping"])
            return [list(ids) for ids in encoded["input_ids"]], offsets.__getitem__
        return batch_ids(
            backend, bodies
        ), lambda k: backend.encode(bodies[k], add_special_tokens=False).offsets

    def score_sequences(self, sequences: Sequence[list[int]]) -> np.ndarray:
        """P("yes") for each token sequence (already templated), batched by length, in input order."""
        self.warm_up()
        scores = np.zeros(len(sequences), dtype=np.float32)
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                rows = order[start : start + self._batch_size]
                ids, mask, positions = _left_pad([sequences[i] for i in rows], self._pad_id, self._device)
                hidden = self._model(
                    input_ids=ids, attention_mask=mask, position_ids=positions
                ).last_hidden_state
                logits = hidden[:, -1, :].float() @ self._head.T  # (batch, 2): "no", "yes"
                scores[rows] = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
        return scores

    # -- loading -----------------------------------------------------------------------------------------
    def _hub_kwargs(self) -> dict[str, Any]:
        return offline_kwargs(self._model_ref)

    def _unavailable(self, exc: Exception) -> RerankUnavailableError:
        return RerankUnavailableError(
            f"cannot load the Qwen3 reranker {self._model_ref!r}: set {self._setting_name} to a local folder "
            f"or a reachable hub id ({type(exc).__name__}: {exc})"
        )

    def _load_tokenizer(self) -> None:
        source = self._model_ref
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(source, padding_side="left", **self._hub_kwargs())
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise self._unavailable(exc) from exc
        no_id, yes_id = (tokenizer.convert_tokens_to_ids(t) for t in ("no", "yes"))
        if None in (no_id, yes_id) or tokenizer.unk_token_id in (no_id, yes_id):
            raise RerankUnavailableError(
                f"{source!r} has no 'yes'/'no' tokens: is {self._setting_name} a Qwen3 model?"
            )
        self._no_yes = (int(no_id), int(yes_id))
        self._prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
        self._suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else no_id)
        self._tokenizer = tokenizer  # last: marks the template as loaded

    def _load(self) -> None:
        source = self._model_ref
        dtype = torch.bfloat16 if str(self._device).startswith("cuda") else torch.float32
        started = time.perf_counter()
        self.load_template()
        try:
            causal = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **self._hub_kwargs())
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise self._unavailable(exc) from exc
        lm_head = causal.get_output_embeddings()
        head = lm_head.weight.detach()[list(self._no_yes)].float().clone()
        if getattr(lm_head, "bias", None) is not None:
            raise RerankUnavailableError(f"{source!r}: an LM head with a bias is not a Qwen3 reranker")
        base = causal.get_decoder().to(self._device).eval()
        self._head = head.to(self._device)
        self._model = base  # the full LM head (vocabulary x hidden) is not kept unless tied to the embeddings
        logger.info(
            "loaded Qwen3 reranker %s on %s (%s, max %d tokens) in %.1fs",
            source,
            self._device,
            dtype,
            self._max_length,
            time.perf_counter() - started,
        )


def _span(
    offsets: Sequence[tuple[int, int]], start: int, window: int, shift: int, length: int
) -> tuple[int, int]:
    """The characters of tokens ``start:start + window`` (offsets into the body; the document starts at
    ``shift``), as offsets into the document, within ``0..length``."""
    last = min(start + window, len(offsets)) - 1
    begin = min(max(offsets[start][0] - shift, 0), length)
    return begin, min(max(offsets[last][1] - shift, begin), length)


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
