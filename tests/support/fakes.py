"""The one home of the test doubles. Never product defaults; the contract suites (``tests/contract/``) run the
fakes beside the real implementations, so a fake cannot drift from its protocol.

- ``HashEmbedder`` (and ``SaltedEmbedder``, "another model"): an ``Embedder`` from hashed words.
- ``FakeReranker``: the one fake ``Reranker``; its scoring, name and failures are set per test.
- ``RecordingSender``: a task sender that records instead of talking to a broker.
- ``DownStore``, ``CountingStore``: the in-memory ``VectorStore`` with failures injected / calls counted.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from reranking import RankedHit, Window
from retrieval.embedder import normalise
from retrieval.errors import StoreUnavailableError
from retrieval.memory_store import InMemoryStore

WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag-of-words hashed into a small vector: texts sharing words are close. A text without words gets a
    fixed unit vector (a real model embeds its special tokens), so every row has norm 1."""

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
        if not vec.any():
            vec[0] = 1.0
        return vec

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalise(np.stack([self._one(t) for t in texts]))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)


class SaltedEmbedder(HashEmbedder):
    """Another embedder (another name, other vectors): what a fine-tuned model is to the index."""

    name = "test:hash-bow-salted:64"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return super().embed_documents([f"{t} salt" for t in texts])

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


class RerankCall(NamedTuple):
    query: str
    documents: list[str]
    top_k: int | None
    instruction: str | None
    windows: bool = False


Scoring = Literal["overlap", "shortest", "stage1"]


class FakeReranker:
    """The one fake ``Reranker`` (unit tier). Scores in [0, 1], by ``scoring``:

    - ``"overlap"`` (default): the share of the query's words a document contains;
    - ``"shortest"``: ``1 / (1 + len(document))``, shorter passages first;
    - ``"stage1"``: keeps the stage-1 order with a scripted confidence on the P(yes) scale: 0.95 down in steps
      of 0.2, or, for a query in ``unsure``, 0.2 down in steps of 0.01 (a low-confidence answer). A score
      here depends on the document's position, so the contract suite runs on the other two.

    Every ``rank`` call is kept in ``calls`` (``pairs``: each (query, document) scored). ``fail`` is raised by
    ``rank``, ``fail_warm_up`` by ``warm_up`` (a model that cannot load); ``delay_s`` slows each call, and
    ``hold`` (an event) keeps each call, once recorded, until it is set (a busy model: its queue fills).
    """

    reorders = True
    revision: str | None = None

    def __init__(
        self,
        scoring: Scoring = "overlap",
        *,
        name: str | None = None,
        max_tokens: int | None = 512,
        fail: BaseException | None = None,
        fail_warm_up: BaseException | None = None,
        delay_s: float = 0.0,
        unsure: Iterable[str] = (),
        hold: threading.Event | None = None,
    ) -> None:
        self.scoring = scoring
        self.hold = hold
        self.name = name or ("qwen3-reranker:scripted" if scoring == "stage1" else f"test:{scoring}")
        self.max_tokens = max_tokens
        self.fail = fail
        self.fail_warm_up = fail_warm_up
        self.delay_s = delay_s
        self.unsure: set[str] = set(unsure)
        self.calls: list[RerankCall] = []

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(call.query, doc) for call in self.calls for doc in call.documents]

    def warm_up(self) -> None:
        if self.fail_warm_up is not None:
            raise self.fail_warm_up

    def _scores(self, query: str, documents: Sequence[str]) -> list[float]:
        if self.scoring == "shortest":
            return [1.0 / (1 + len(d)) for d in documents]
        if self.scoring == "stage1":
            top, step = (0.2, 0.01) if query in self.unsure else (0.95, 0.2)
            return [max(0.0, top - step * i) for i in range(len(documents))]
        words = set(WORD.findall(query.lower()))
        return [len(words & set(WORD.findall(d.lower()))) / max(len(words), 1) for d in documents]

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
        windows: bool = False,
    ) -> list[RankedHit]:
        self.calls.append(RerankCall(query, list(documents), top_k, instruction, windows))
        if self.hold is not None and not self.hold.wait(timeout=60):
            raise TimeoutError("FakeReranker.hold was never set")
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        scores = self._scores(query, documents)
        spans = [Window(0, 1, 0, len(d)) if windows else None for d in documents]  # it reads them whole
        hits = sorted(
            (RankedHit(i, s, spans[i]) for i, s in enumerate(scores)), key=lambda h: (-h.score, h.index)
        )
        return hits if top_k is None else hits[:top_k]


class DownStore(InMemoryStore):
    """The in-memory store whose ``methods`` (default: ``upsert``) raise ``StoreUnavailableError``."""

    def __init__(self, *methods: str) -> None:
        super().__init__()
        for method in methods or ("upsert",):
            setattr(self, method, self._unavailable)

    @staticmethod
    def _unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("Milvus at http://nowhere is unreachable")


class CountingStore(InMemoryStore):
    """The in-memory store, counting ``ensure_collection`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.ensured = 0

    def ensure_collection(self, *, embedder_name: str, dimension: int) -> None:
        self.ensured += 1
        super().ensure_collection(embedder_name=embedder_name, dimension=dimension)
