"""Before/after evaluation of ``sieve train``: exact search, the measures, ``eval.md`` and ``eval.json``.

Measures come from ``ir-measures`` (trec_eval): nDCG@10, R@10, R@100 and MRR@10 (``RR@10``), means over the
held-out queries. A ranking is passage ids, best first; each gets the score ``n - rank`` so trec_eval keeps
exactly that order. The embedder is evaluated by exact cosine search (numpy) over a passage pool; the
reranker by reordering the base embedder's top ``depth`` of that pool. Both are measured through Sieve's own
embedder and reranker classes, so the numbers are what serving the model will give.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.relevance.training_data import LabelledData, mine_negatives

MEASURES = ("nDCG@10", "R@10", "R@100", "MRR@10")
console = Console()
NO_HIT = "__sieve_no_hit__"


def rank_metrics(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Means of ``MEASURES`` over the queries of ``qrels`` (a query without a ranking counts as 0)."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    measures = {"nDCG@10": nDCG @ 10, "R@10": R @ 10, "R@100": R @ 100, "MRR@10": RR @ 10}
    run = {
        qid: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)} if docs else {NO_HIT: 0.0}
        for qid in qrels
        for docs in [list(dict.fromkeys(rankings.get(qid, ())))]
    }
    judged = {qid: dict(grades) for qid, grades in qrels.items()}
    aggregate = ir_measures.calc_aggregate(list(measures.values()), judged, run)
    return {name: float(aggregate[measure]) for name, measure in measures.items()}


def exact_search(
    queries: np.ndarray, pool: np.ndarray, pool_ids: Sequence[str], k: int
) -> tuple[np.ndarray, list[list[str]]]:
    """(query x pool cosine scores of unit vectors, the top ``k`` ids per query)."""
    scores = queries @ pool.T
    k = min(k, len(pool_ids))
    top = np.argsort(-scores, axis=1)[:, :k]
    return scores, [[pool_ids[i] for i in row] for row in top]


def pool_ids(passages: Mapping[str, str], keep: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """Every passage id, or a sample of ``limit`` (fixed seed) plus every id in ``keep``, in source order."""
    ids = list(passages)
    if limit is None or limit >= len(ids):
        return ids
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(ids), size=limit, replace=False).tolist())
    wanted = set(keep)
    return [pid for i, pid in enumerate(ids) if i in chosen or pid in wanted]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def embed(embedder: Any, texts: Sequence[str], *, query: bool, label: str, chunk: int = 128) -> np.ndarray:
    """Embed with a Sieve embedder, in chunks, with a progress bar."""
    parts = []
    with _progress() as progress:
        task = progress.add_task(label, total=len(texts))
        for start in range(0, len(texts), chunk):
            batch = list(texts[start : start + chunk])
            parts.append(embedder.embed_queries(batch) if query else embedder.embed_documents(batch))
            progress.advance(task, len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)


def sieve_embedder(model: str, device: str) -> Any:
    """Sieve's own embedder for a model folder (so the eval measures what serving will do)."""
    from retrieval.backends.training import is_qwen3

    if is_qwen3(model):
        from retrieval.backends.qwen3 import Qwen3Embedder

        return Qwen3Embedder(model=model, device=device)
    from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model=model, device=device)


def passage_pool(data: LabelledData, limit: int | None, seed: int) -> list[str]:
    """The passage pool for mining and eval: all passages, or a sample plus every judged passage."""
    judged = [pid for grades in data.qrels.values() for pid in grades]
    return pool_ids(data.passages, judged, limit, seed)


def rows_for(
    train: LabelledData,
    scores: np.ndarray,
    ids: Sequence[str],
    negatives: int,
    seed: int,
    *,
    near_ties: np.ndarray | None = None,
) -> list[tuple[str, str, list[str]]]:
    """A row per (train query, positive): labelled negatives first, then mined from ``scores`` (near-ties
    judged on ``near_ties``, see ``mine_negatives``); ``negatives`` at most."""
    qids = list(train.queries)
    positives = [set(train.positives(q)) for q in qids]
    mined = (
        mine_negatives(scores, ids, positives, negatives, seed=seed, near_ties=near_ties)
        if negatives
        else [[] for _ in qids]
    )
    rows = []
    for qid, found in zip(qids, mined, strict=True):
        negs = list(dict.fromkeys([*train.negatives(qid), *found]))[:negatives]
        rows += [
            (train.queries[qid], train.passages[p], [train.passages[n] for n in negs])
            for p in train.positives(qid)
        ]
    return rows


def sieve_reranker(kind: str, model: str, device: str) -> Any:
    """Sieve's own reranker for a model (so the eval measures what serving will do)."""
    if kind == "qwen3":
        from reranking.backends.qwen3 import Qwen3Reranker

        return Qwen3Reranker(model=model, device=device, max_tokens=512)
    from reranking.backends.cross_encoder import CrossEncoderReranker

    return CrossEncoderReranker(model=model, device=device, max_tokens=512)


def rerank_candidates(
    reranker: Any, candidates: dict[str, list[str]], held: LabelledData, label: str
) -> dict[str, list[str]]:
    out = {}
    with _progress() as progress:
        task = progress.add_task(label, total=len(candidates))
        for qid, ids in candidates.items():
            hits = reranker.rank(held.queries[qid], [held.passages[p] for p in ids])
            out[qid] = [ids[hit.index] for hit in hits]
            progress.advance(task)
    return out


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Held-out evaluation: {report['kind']} {report['output']}",
        "",
        f"- base: `{report['base']}`",
        f"- data: {report['data']['source']} (sha256 {report['data']['digest']})",
        f"- queries: {report['data']['train_queries']} trained, {report['data']['held_out_queries']} held "
        "out (split by query)",
        f"- {report['setup']}",
        "",
        "| model | " + " | ".join(MEASURES) + " |",
        "| --- | " + " | ".join("---" for _ in MEASURES) + " |",
    ]
    for name, values in report["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in MEASURES) + " |")
    before, after = report["results"].get("before"), report["results"].get("after")
    if before and after:
        delta = after["nDCG@10"] - before["nDCG@10"]
        lines += ["", f"nDCG@10 change: {delta:+.4f} ({'better' if delta > 0 else 'not better'})"]
    if report.get("command"):
        lines += ["", "```", str(report["command"]), "```"]
    return "\n".join(lines) + "\n"


def write_eval(folder: Path, report: Mapping[str, Any]) -> None:
    (folder / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (folder / "eval.md").write_text(markdown(report), encoding="utf-8")
