"""``sieve train embedder`` and ``sieve train reranker``: labelled data in, a versioned model folder out.

Steps of both: load the data (``api.relevance.training_data``), split it by query into train and held out,
open ``<out>/<kind>-v<N>`` (or, with ``resume``, the newest unfinished one), mine hard negatives with the base
embedder, evaluate the base on the held-out queries, train (``retrieval.backends.training`` or
``reranking.backends.training``: torch is imported only there and only once a run starts), evaluate the
result the same way, write ``eval.md``/``eval.json`` and, last, ``sieve-model.json`` (with the revision).

Mining and the base evaluation are cached in the run folder (``prepared.json``) so a
resumed run does not embed the pool again.

Errors: ``TrainSetupError`` (a ``ValueError``) when a run cannot start as asked: data that does not load or
split, ``resume`` without a matching unfinished run. The command line shows it as a bad parameter.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from api.relevance.mining import mining_scores
from api.relevance.train_eval import (
    MEASURES,
    console,
    embed,
    exact_search,
    passage_pool,
    rank_metrics,
    rerank_candidates,
    rows_for,
    sieve_embedder,
    sieve_reranker,
    write_eval,
)
from api.relevance.training_data import (
    LabelledData,
    TrainingDataError,
    load_labelled,
    new_version_dir,
    split_by_query,
    unfinished_dir,
    write_manifest,
)


class TrainSetupError(ValueError):
    """A run cannot start as asked (the message says what to change)."""


@dataclass(frozen=True)
class RunOptions:
    """What both runs take: the data and its split, the output, the trainer's common settings."""

    data: Path
    qrels: str | None
    out: Path
    epochs: float
    batch_size: int
    lr: float | None
    max_steps: int
    hard_negatives: int
    held_out: float
    resume: bool
    device: str
    lora_r: int
    max_queries: int | None
    seed: int
    eval_corpus_limit: int | None
    save_steps: int
    keep_checkpoints: bool
    command: str = ""
    mine_with: str = "dense"  # api.relevance.mining.MINERS: whose ranking the hard negatives come from


def open_run(out: Path, kind: str, resume: bool, settings: dict[str, Any]) -> Path:
    """The run folder: with ``resume`` the newest unfinished one (same settings), else a new one."""
    if resume:
        folder = unfinished_dir(out, kind)
        if folder is None:
            raise TrainSetupError(f"--resume: no unfinished {kind} run under {out}")
        if not (folder / "run.json").is_file():
            raise TrainSetupError(f"--resume: {folder} has no run.json; start a new run instead")
        saved = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        if saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise TrainSetupError(
                f"--resume: {folder} was started with other settings ({', '.join(changed)})"
            )
        console.print(f"resuming {folder}")
        return folder
    folder = new_version_dir(out, kind)
    (folder / "run.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return folder


def mining_setting(options: RunOptions) -> dict[str, str]:
    """The miner as a run setting; left out when it is the default, so runs started before it can resume."""
    return {} if options.mine_with == "dense" else {"mine_with": options.mine_with}


def results_table(results: dict[str, dict[str, float]]) -> Table:
    table = Table("model", *MEASURES)
    for name, values in results.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in MEASURES))
    return table


def load_split(options: RunOptions) -> tuple[LabelledData, LabelledData, LabelledData]:
    """(everything labelled, the train queries, the held-out queries)."""
    try:
        labelled = load_labelled(options.data, qrels=options.qrels, max_queries=options.max_queries)
        train, held = split_by_query(labelled, options.held_out, seed=options.seed)
    except (TrainingDataError, ValueError) as exc:
        raise TrainSetupError(str(exc)) from exc
    if not train.queries:
        raise TrainSetupError(f"{options.data}: no query left to train on (lower --held-out or add labels)")
    console.print(
        f"data: {labelled.source}: {len(train.queries)} train / {len(held.queries)} held-out queries, "
        f"{len(labelled.passages)} passages"
    )
    return labelled, train, held


def finish(
    folder: Path, kind: str, base: str, report: dict[str, Any], extra: dict[str, Any], keep: bool
) -> None:
    """Drop what only a resumed run needs (unless ``keep``), write the eval and, last, the manifest."""
    if not keep:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        (folder / "prepared.json").unlink(missing_ok=True)
    write_eval(folder, report)
    manifest = write_manifest(folder, kind, base, {**extra, "eval": report["results"]})
    console.print(results_table(report["results"]))
    console.print(f"{kind} revision {manifest['revision']}: {folder}")


def run_embedder(options: RunOptions, *, base: str | None, max_seq_length: int | None) -> None:
    """Fine-tune the dense embedder (MultipleNegativesRankingLoss: in-batch + mined hard negatives)."""
    from retrieval.backends.training import EmbedderTrainConfig, is_qwen3, resolve_base, train_embedder

    labelled, train, held = load_split(options)
    base_ref = resolve_base(base)
    qwen3 = is_qwen3(base_ref)
    config = EmbedderTrainConfig(
        epochs=options.epochs,
        batch_size=options.batch_size,
        learning_rate=options.lr if options.lr is not None else (1e-4 if qwen3 else 2e-5),
        max_steps=options.max_steps,
        save_steps=options.save_steps,
        seed=options.seed,
        device=options.device,
        lora_r=options.lora_r,
        max_seq_length=max_seq_length,
    )
    settings = {
        "base": base_ref,
        "data": labelled.source,
        "digest": labelled.digest,
        "held_out": options.held_out,
        "max_queries": options.max_queries,
        "hard_negatives": options.hard_negatives,
        "eval_corpus_limit": options.eval_corpus_limit,
        "config": config.__dict__,
        **mining_setting(options),
    }
    folder = open_run(options.out, "embedder", options.resume, settings)
    ids = passage_pool(labelled, options.eval_corpus_limit, options.seed)
    pool_texts = [labelled.passages[p] for p in ids]
    cache = folder / "prepared.json"
    if cache.exists():
        prepared = json.loads(cache.read_text(encoding="utf-8"))
    else:
        embedder = sieve_embedder(base_ref, options.device)
        pool = embed(embedder, pool_texts, query=False, label="base: embed passages")
        train_q = embed(embedder, list(train.queries.values()), query=True, label="base: embed train queries")
        held_q = embed(
            embedder, list(held.queries.values()), query=True, label="base: embed held-out queries"
        )
        dense, _ = exact_search(train_q, pool, ids, 1)
        ranking = mining_scores(options.mine_with, dense, list(train.queries.values()), pool_texts)
        rows = rows_for(train, ranking, ids, options.hard_negatives, options.seed, near_ties=dense)
        _, top = exact_search(held_q, pool, ids, 100)
        before = rank_metrics(held.qrels, dict(zip(held.queries, top, strict=True))) if held.queries else None
        prepared = {"rows": rows, "before": before}
        cache.write_text(json.dumps(prepared), encoding="utf-8")
    console.print(f"training on {len(prepared['rows'])} rows in {folder}")
    stats = train_embedder(
        base_ref, prepared["rows"], folder, folder / "checkpoints", config, resume=options.resume
    )
    results: dict[str, dict[str, float]] = {}
    if held.queries:
        trained = sieve_embedder(str(folder), options.device)
        pool = embed(trained, pool_texts, query=False, label="trained: embed passages")
        held_q = embed(
            trained, list(held.queries.values()), query=True, label="trained: embed held-out queries"
        )
        _, top = exact_search(held_q, pool, ids, 100)
        results = {
            "before": prepared["before"],
            "after": rank_metrics(held.qrels, dict(zip(held.queries, top, strict=True))),
        }
    counts = {"train_queries": len(train.queries), "held_out_queries": len(held.queries)}
    report = {
        "kind": "embedder",
        "output": str(folder),
        "base": base_ref,
        "data": {"source": labelled.source, "digest": labelled.digest, **counts},
        "setup": f"exact cosine search over {len(ids)} passages; {len(prepared['rows'])} training rows",
        "results": results,
        "training": stats,
        "command": options.command,
    }
    extra = {"data": report["data"], "hyper_parameters": hyper_parameters(config, options)}
    finish(folder, "embedder", base_ref, report, extra, options.keep_checkpoints)


def hyper_parameters(config: Any, options: RunOptions) -> dict[str, Any]:
    """What ``sieve-model.json`` records of a run's settings: the trainer's and how negatives were mined."""
    return config.__dict__ | {"hard_negatives": options.hard_negatives, "mine_with": options.mine_with}


def run_reranker(
    options: RunOptions, *, kind: str, base: str, embedder: str | None, rerank_depth: int
) -> None:
    """Fine-tune a reranker (``kind``: cross-encoder or qwen3) on hard negatives mined with the stage-1
    ``embedder``; evaluate by reranking its top ``rerank_depth``."""
    from reranking.backends.training import RerankerTrainConfig, train_reranker
    from retrieval.backends.training import resolve_base

    labelled, train, held = load_split(options)
    embedder_ref = resolve_base(embedder)
    config = RerankerTrainConfig(
        epochs=options.epochs,
        batch_size=options.batch_size,
        learning_rate=options.lr if options.lr is not None else (1e-4 if kind == "qwen3" else 2e-5),
        max_steps=options.max_steps,
        save_steps=options.save_steps,
        seed=options.seed,
        device=options.device,
        lora_r=options.lora_r,
    )
    settings = {
        "base": base,
        "kind": kind,
        "embedder": embedder_ref,
        "data": labelled.source,
        "digest": labelled.digest,
        "held_out": options.held_out,
        "max_queries": options.max_queries,
        "hard_negatives": options.hard_negatives,
        "eval_corpus_limit": options.eval_corpus_limit,
        "rerank_depth": rerank_depth,
        "config": config.__dict__,
        **mining_setting(options),
    }
    folder = open_run(options.out, "reranker", options.resume, settings)
    ids = passage_pool(labelled, options.eval_corpus_limit, options.seed)
    cache = folder / "prepared.json"
    if cache.exists():
        prepared = json.loads(cache.read_text(encoding="utf-8"))
    else:
        stage1 = sieve_embedder(embedder_ref, options.device)
        pool = embed(
            stage1, [labelled.passages[p] for p in ids], query=False, label="stage 1: embed passages"
        )
        train_q = embed(
            stage1, list(train.queries.values()), query=True, label="stage 1: embed train queries"
        )
        held_q = embed(
            stage1, list(held.queries.values()), query=True, label="stage 1: embed held-out queries"
        )
        scores, _ = exact_search(train_q, pool, ids, 1)
        _, top = exact_search(held_q, pool, ids, rerank_depth)
        candidates = dict(zip(held.queries, top, strict=True))
        results = {"stage 1": rank_metrics(held.qrels, candidates)} if held.queries else {}
        if held.queries:
            base_model = sieve_reranker(kind, base, options.device)
            results["before"] = rank_metrics(
                held.qrels, rerank_candidates(base_model, candidates, held, "base: rerank")
            )
        ranking = mining_scores(
            options.mine_with, scores, list(train.queries.values()), [labelled.passages[p] for p in ids]
        )
        rows = rows_for(train, ranking, ids, options.hard_negatives, options.seed, near_ties=scores)
        prepared = {"rows": rows, "candidates": candidates, "results": results}
        cache.write_text(json.dumps(prepared), encoding="utf-8")
    console.print(f"training on {len(prepared['rows'])} groups in {folder}")
    stats = train_reranker(
        kind, base, prepared["rows"], folder, folder / "checkpoints", config, resume=options.resume
    )
    results = dict(prepared["results"])
    if held.queries:
        trained = sieve_reranker(kind, str(folder), options.device)
        results["after"] = rank_metrics(
            held.qrels, rerank_candidates(trained, prepared["candidates"], held, "trained: rerank")
        )
    counts = {"train_queries": len(train.queries), "held_out_queries": len(held.queries)}
    report = {
        "kind": "reranker",
        "output": str(folder),
        "base": base,
        "data": {"source": labelled.source, "digest": labelled.digest, **counts},
        "setup": f"{kind}: reranking the top {rerank_depth} of {embedder_ref} over {len(ids)} passages",
        "results": results,
        "training": stats,
        "command": options.command,
    }
    extra = {
        "reranker_kind": kind,
        "data": report["data"],
        "hyper_parameters": hyper_parameters(config, options),
    }
    finish(folder, "reranker", base, report, extra, options.keep_checkpoints)
