"""A search corpus of any size for the service benchmarks, written straight through the store.

``Corpus(chunks, words, scifact, seed)`` makes ``chunks`` passages of about ``words`` words: sentences drawn
at random from the SciFact abstracts (``scifact``: a BEIR folder with ``corpus.jsonl.gz``) when that folder
exists, else pseudo-English from a Zipf-distributed vocabulary of 20,000 made-up words (term frequencies
shaped like a natural language's, so BM25 posting lists are too). Queries are the SciFact claims, or 6 to 10
words cut from a random passage (they match something lexically). Passages are grouped ``per_document`` to a
document.

``load(corpus, store, records, vectors)`` writes them the way ingestion leaves them: each document accepted
and activated in the records (search serves only active versions), the chunks upserted in batches of
``batch`` (one Milvus flush each), with the vectors that ``vectors(texts)`` returns for each batch (the
service's own embedder, or ``random_vectors``).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingestion.records import Records
from retrieval import Chunk, VectorStore

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
VERSION = "bench-v1"


def _sentences(scifact: Path) -> list[str]:
    with gzip.open(scifact / "corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    return [s.strip() for text in texts for s in SENTENCE.split(text) if len(s.split()) >= 4]


def _claims(scifact: Path) -> list[str]:
    path = scifact / "queries.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines]


class _PseudoEnglish:
    """Sentences of made-up words whose frequencies follow Zipf's law (s = 1.07, as English roughly does)."""

    def __init__(self, rng: random.Random, vocabulary: int = 20_000) -> None:
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"] + ["th", "ng", "st", "er", "ion"]
        words: set[str] = set()
        while len(words) < vocabulary:
            words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
        self.words = sorted(words, key=lambda w: (len(w), w))
        weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
        self.cumulative = list(np.cumsum(weights / weights.sum()))
        self.rng = rng

    def sentence(self) -> str:
        n = self.rng.randint(8, 24)
        words = self.rng.choices(self.words, cum_weights=self.cumulative, k=n)
        return " ".join(words).capitalize() + "."


@dataclass
class Corpus:
    chunks: int
    words: int = 170
    scifact: Path | None = None
    seed: int = 0
    per_document: int = 10
    source: str = field(init=False)
    _sentences: list[str] = field(init=False, repr=False)
    _claims: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        if self.scifact is not None and (self.scifact / "corpus.jsonl.gz").exists():
            self._sentences, self._claims = _sentences(self.scifact), _claims(self.scifact)
            self.source = f"sentences of the SciFact abstracts ({len(self._sentences)})"
        else:
            pseudo = _PseudoEnglish(rng)
            self._sentences, self._claims = [pseudo.sentence() for _ in range(50_000)], []
            self.source = "generated pseudo-English (Zipf vocabulary of 20,000 words)"

    def passages(self) -> Iterator[str]:
        """``chunks`` passages of about ``words`` words each, the same for the same seed."""
        rng = random.Random(self.seed + 1)
        for _ in range(self.chunks):
            picked: list[str] = []
            count = 0
            while count < self.words:
                sentence = rng.choice(self._sentences)
                picked.append(sentence)
                count += len(sentence.split())
            yield " ".join(picked)

    def queries(self, count: int = 200) -> list[str]:
        rng = random.Random(self.seed + 2)
        if self._claims:
            return rng.sample(self._claims, min(count, len(self._claims)))
        out = []
        for _ in range(count):
            words = rng.choice(self._sentences).rstrip(".").split()
            n = min(len(words), rng.randint(6, 10))
            start = rng.randint(0, len(words) - n)
            out.append(" ".join(words[start : start + n]).lower())
        return out

    def chunk_batches(self, tenant: str, batch: int) -> Iterator[list[Chunk]]:
        """The passages as chunks of documents ``bench-<n>`` (``per_document`` each), about ``batch`` at a
        time: whole documents only, so that each batch activates the documents it completes."""
        batch = max(self.per_document, batch - batch % self.per_document)
        out: list[Chunk] = []
        for i, text in enumerate(self.passages()):
            document, position = divmod(i, self.per_document)
            out.append(
                Chunk(
                    tenant=tenant,
                    document_id=f"bench-{document}",
                    version=VERSION,
                    position=position,
                    text=text,
                    metadata={"source": "bench"},
                )
            )
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out


def random_vectors(dimension: int, seed: int = 0) -> Callable[[Sequence[str]], np.ndarray]:
    """Unit vectors drawn at random (Gaussian, normalised): a stand-in for embeddings at sizes where
    embedding every chunk would take hours. An ANN index finds less structure in them than in real
    embeddings, so its search cost is, if anything, higher."""
    rng = np.random.default_rng(seed)

    def vectors(texts: Sequence[str]) -> np.ndarray:
        matrix = rng.standard_normal((len(texts), dimension)).astype(np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    return vectors


def load(
    corpus: Corpus,
    *,
    tenant: str,
    store: VectorStore,
    records: Records,
    vectors: Callable[[Sequence[str]], np.ndarray],
    batch: int = 5000,
    progress: Callable[[int], None] = lambda _: None,
) -> int:
    """Write the corpus for ``tenant``; returns the chunks written. ``progress(done)`` after each batch."""
    done = 0
    for chunks in corpus.chunk_batches(tenant, batch):
        store.upsert(chunks, vectors([c.indexed_text for c in chunks]))
        counts: dict[str, int] = {}
        for chunk in chunks:
            counts[chunk.document_id] = counts.get(chunk.document_id, 0) + 1
        for document_id, count in counts.items():
            records.accept_upload(
                tenant,
                document_id,
                version=VERSION,
                filename=f"{document_id}.txt",
                path="",
                metadata={"source": "bench"},
                unchanged_chunks=count,  # no job to run: the chunks are written here
            )
            records.activate(tenant, document_id, VERSION, count, metadata={"source": "bench"})
        done += len(chunks)
        progress(done)
    return done
