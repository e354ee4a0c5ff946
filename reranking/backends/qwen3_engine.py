"""Qwen3-Reranker served by the inference engine (``engine.engine.Engine``, ``head="score"``).

``EngineReranker`` is ``Qwen3Reranker`` with the engine holding the model: the same template and windows
(its ``prepare_windows``; ``rank(..., windows=True)`` reports the winner), the same ``name``, and the same
score, P("yes") = sigmoid(logit_yes - logit_no) in [0, 1], so results and caches are comparable between the
two. The engine's errors become the rerank stage's:
``EngineInputError`` → ``RerankInputError``, ``EngineOverloadedError`` → ``RerankOverloadedError``,
``EngineUnavailableError`` (load failure, closed, timed out) → ``RerankUnavailableError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from engine.engine import Engine, EngineStats
from engine.errors import EngineError, EngineInputError, EngineOverloadedError
from engine.prompts import QWEN3_RERANKER_INSTRUCTION
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.errors import RerankInputError, RerankOverloadedError, RerankUnavailableError
from reranking.reranker import RankedHit, best_windows, check_rank_request


@contextmanager
def rerank_errors() -> Iterator[None]:
    """The engine's errors as the rerank stage's (same message, the engine's error as the cause)."""
    try:
        yield
    except EngineInputError as exc:
        raise RerankInputError(str(exc)) from exc
    except EngineOverloadedError as exc:
        raise RerankOverloadedError(str(exc)) from exc
    except EngineError as exc:
        raise RerankUnavailableError(str(exc)) from exc


class EngineReranker:
    """Qwen3-Reranker served by an ``Engine``: ``Qwen3Reranker``'s exact input, scores P("yes") in [0, 1]."""

    reorders = True

    def __init__(
        self,
        model: str,
        device: str = "cuda",
        max_tokens: int | None = None,
        default_instruction: str = QWEN3_RERANKER_INSTRUCTION,
        token_budget: int = 32768,
        timeout_s: float | None = 60.0,
        setting_name: str = "RERANK_MODEL",
        **engine_options: Any,
    ) -> None:
        self._template = Qwen3Reranker(
            model, max_tokens=max_tokens, default_instruction=default_instruction, setting_name=setting_name
        )  # its template and windows only: the engine holds the model
        if self._template.max_tokens > token_budget:
            raise ValueError(
                f"max_tokens {self._template.max_tokens} exceeds the token budget {token_budget}"
            )
        self._timeout = timeout_s
        self.engine = Engine(model, head="score", device=device, token_budget=token_budget, **engine_options)

    @property
    def name(self) -> str:
        return self._template.name

    @property
    def max_tokens(self) -> int:
        return self._template.max_tokens

    @property
    def revision(self) -> str | None:
        return self._template.revision

    @property
    def precision(self) -> str:
        """The engine's products: "bf16" or "fp8" (decided at warm-up; "bf16" before)."""
        return self.engine.precision.used

    @property
    def precision_reason(self) -> str:
        """Why ``precision`` is what it is (FP8's gate figures, or why it fell back to bf16)."""
        return self.engine.precision.reason

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's counters (batches, requests, tokens, device time), exported by ``GET /metrics``."""
        return self.engine.stats

    def warm_up(self) -> None:
        self._template.load_template()
        if self.engine.head_token_ids is None:
            self.engine.head_token_ids = self._template.head_token_ids
        with rerank_errors():
            self.engine.warm_up()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        """As ``Qwen3Reranker.rank``: every window of every document in one engine call."""
        check_rank_request(query, top_k)
        if not documents:
            return []
        self.warm_up()
        sequences, spans = self._template.prepare_windows(query, documents, instruction=instruction)
        with rerank_errors():
            margins = self.engine.run([seq for doc in sequences for seq in doc], timeout=self._timeout)
        scores = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))  # softmax over (no, yes) = sigmoid
        return best_windows(scores.tolist(), spans, top_k, report=windows)
