"""Test doubles for the fast tier. Never product defaults: the contract suites run the real ones too."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import numpy as np

from reranking import RankedHit
from retrieval.embedder import normalise

WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag-of-words hashed into a small vector: texts sharing words are close. Unit tests only."""

    name = "test:hash-bow:64"
    dimension = 64
    max_tokens = 64

    def __init__(self) -> None:
        self.warmed = 0

    def warm_up(self) -> None:
        self.warmed += 1

    def count_tokens(self, text: str) -> int:
        return len(WORD.findall(text))

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dimension, dtype=np.float32)
        for word in WORD.findall(text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
        return vec

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(np.stack([self._one(t) for t in texts]))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)


class RecordingSender:
    """Collects sent tasks instead of talking to a broker."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.fail = fail

    def send_task(self, name: str, args: list[str], queue: str | None = None) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, list(args)))


class OverlapReranker:
    """Scores a document by the share of the query's words it contains, in [0, 1]. Unit tests only."""

    name = "test:overlap"
    reorders = True
    max_tokens: int | None = 512
    revision: str | None = None

    def __init__(self, *, fail: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[tuple[str, list[str], int | None, str | None]] = []

    def warm_up(self) -> None:
        return None

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedHit]:
        self.calls.append((query, list(documents), top_k, instruction))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        words = set(WORD.findall(query.lower()))
        scores = [len(words & set(WORD.findall(d.lower()))) / max(len(words), 1) for d in documents]
        hits = sorted((RankedHit(i, s) for i, s in enumerate(scores)), key=lambda h: (-h.score, h.index))
        return hits if top_k is None else hits[:top_k]
