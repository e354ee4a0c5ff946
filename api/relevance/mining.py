"""The scores that ``sieve train`` mines hard negatives from: the base embedder's, BM25's, or both fused.

``--mine-with`` picks the retriever whose mistakes become the training negatives:

    dense    the base embedder's cosine scores (query x pool), as before
    bm25     Okapi BM25 over the passages' terms as the lexical leg analyses them (``retrieval.lexical``:
             stop words, Snowball stems, jieba for Chinese), k1 1.2, b 0.75, Milvus's idf
    hybrid   reciprocal rank fusion of the two (k 60), as ``hybrid`` search ranked with ``fusion=rrf`` (its
             default before standardised scores, ``retrieval.fusion``)

A hybrid index is already strong where BM25 is: the passages it still ranks too high are those that both legs
like, and those are the negatives a dense model fine-tuned for hybrid search should learn to push down. Every
matrix here is query x pool, higher is better, and ranks the candidates of ``training_data.mine_negatives``;
its near-tie rule (a passage almost as similar as the positive is likely an unlabelled positive) still reads
the base model's cosine, whatever the miner.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from retrieval import lexical

MINERS = ("dense", "bm25", "hybrid")
BM25_K1 = 1.2
BM25_B = 0.75
RRF_K = 60


def bm25_scores(
    queries: Sequence[str], passages: Sequence[str], *, k1: float = BM25_K1, b: float = BM25_B
) -> np.ndarray:
    """Okapi BM25 of every passage for every query (float32, queries x passages; 0 where no term matches)."""
    docs = [Counter(lexical.terms(text)) for text in passages]
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    if not docs:
        return out
    lengths = np.array([sum(doc.values()) for doc in docs], dtype=np.float64)
    avgdl = float(lengths.mean()) or 1.0
    postings: dict[str, list[tuple[int, int]]] = {}
    for i, doc in enumerate(docs):
        for term, tf in doc.items():
            postings.setdefault(term, []).append((i, tf))
    n = len(docs)
    norm = k1 * (1 - b + b * lengths / avgdl)
    for row, query in enumerate(queries):
        for term in set(lexical.terms(query)):
            hits = postings.get(term)
            if not hits:
                continue
            idf = math.log(1 + (n - len(hits) + 0.5) / (len(hits) + 0.5))
            index = np.fromiter((i for i, _ in hits), dtype=np.int64, count=len(hits))
            tf = np.fromiter((t for _, t in hits), dtype=np.float64, count=len(hits))
            out[row, index] += (idf * tf * (k1 + 1) / (tf + norm[index])).astype(np.float32)
    return out


def rrf_scores(*legs: np.ndarray, k: int = RRF_K, matched_only: Sequence[bool] | None = None) -> np.ndarray:
    """Reciprocal rank fusion of same-shape score matrices: the sum over legs of 1 / (k + rank), rank from 1.

    A leg marked in ``matched_only`` ranks only its positive scores (BM25: a passage with no query term is
    not in that leg's list and gets nothing from it); ties keep the pool's order.
    """
    if not legs:
        raise ValueError("rrf_scores needs at least one score matrix")
    flags = list(matched_only) if matched_only is not None else [False] * len(legs)
    if len(flags) != len(legs):
        raise ValueError("matched_only needs one flag per leg")
    fused = np.zeros(legs[0].shape, dtype=np.float64)
    for scores, only_matched in zip(legs, flags, strict=True):
        if scores.shape != fused.shape:
            raise ValueError(f"score matrices differ in shape: {scores.shape} vs {fused.shape}")
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
        part = 1.0 / (k + ranks)
        if only_matched:
            part = np.where(scores > 0, part, 0.0)
        fused += part
    return fused


def mining_scores(
    miner: str, dense: np.ndarray, queries: Sequence[str], passages: Sequence[str]
) -> np.ndarray:
    """The query x pool matrix that ``miner`` (one of ``MINERS``) ranks by; ``dense`` is the base model's."""
    if miner == "dense":
        return dense
    if miner not in MINERS:
        raise ValueError(f"unknown miner {miner!r}: use one of {', '.join(MINERS)}")
    lexical_scores = bm25_scores(queries, passages)
    if miner == "bm25":
        return lexical_scores
    return rrf_scores(dense, lexical_scores, matched_only=(False, True))
