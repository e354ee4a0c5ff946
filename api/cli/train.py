"""``sieve train embedder`` and ``sieve train reranker``: labelled data in, a versioned model folder out.

Steps of both: load the data (``api.training_data``), split it by query into train and held out, open
``<out>/<kind>-v<N>`` (or, with ``--resume``, the newest unfinished one), mine hard negatives with the base
embedder, evaluate the base on the held-out queries, train (``retrieval.backends.training`` or
``reranking.backends.training``: torch is imported only there and only once a command runs), evaluate the
result the same way, write ``eval.md``/``eval.json`` and, last, ``sieve-model.json`` (with the revision).

Mining and the base evaluation are cached in the run folder (``prepared.json``) so a
resumed run does not embed the pool again.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from api.train_eval import (
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
from api.training_data import (
    LabelledData,
    TrainingDataError,
    load_labelled,
    new_version_dir,
    split_by_query,
    unfinished_dir,
    write_manifest,
)

train_app = typer.Typer(help="Fine-tune the embedder or the reranker on labelled data.", no_args_is_help=True)
logger = logging.getLogger(__name__)

DataOpt = Annotated[
    Path, typer.Option(help="BEIR folder, review export .jsonl or query/passage/label .jsonl")
]
QrelsOpt = Annotated[str | None, typer.Option(help="qrels/NAME.tsv of a BEIR folder (its train split)")]
OutOpt = Annotated[Path, typer.Option(help="Parent of the versioned output folders")]
EpochsOpt = Annotated[float, typer.Option(help="Passes over the training rows")]
LrOpt = Annotated[float | None, typer.Option(help="Learning rate (default per model kind)")]
StepsOpt = Annotated[int, typer.Option(help="Stop after N optimizer steps (-1: by epochs)")]
NegOpt = Annotated[int, typer.Option(help="Mined hard negatives per (query, positive)")]
HeldOpt = Annotated[float, typer.Option(help="Fraction of the queries held out for the before/after eval")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the newest unfinished run from its last checkpoint")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")]
LoraOpt = Annotated[int, typer.Option(help="LoRA rank (Qwen3 models)")]
MaxQOpt = Annotated[int | None, typer.Option(help="Only the first N labelled queries (quick runs)")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split, the sampling and the trainer")]
PoolOpt = Annotated[
    int | None, typer.Option(help="Passages sampled for mining and eval (+ every judged one); default all")
]
SaveOpt = Annotated[int, typer.Option(help="Checkpoint every N steps")]
KeepOpt = Annotated[bool, typer.Option(help="Keep checkpoints and mined rows once the run has finished")]
SeqOpt = Annotated[int | None, typer.Option(help="Tokens per text while training (default: the model's)")]


def open_run(out: Path, kind: str, resume: bool, settings: dict[str, Any]) -> Path:
    """The run folder: with ``--resume`` the newest unfinished one (same settings), else a new one."""
    if resume:
        folder = unfinished_dir(out, kind)
        if folder is None:
            raise typer.BadParameter(f"--resume: no unfinished {kind} run under {out}")
        if not (folder / "run.json").is_file():
            raise typer.BadParameter(f"--resume: {folder} has no run.json; start a new run instead")
        saved = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        if saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise typer.BadParameter(
                f"--resume: {folder} was started with other settings ({', '.join(changed)})"
            )
        console.print(f"resuming {folder}")
        return folder
    folder = new_version_dir(out, kind)
    (folder / "run.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return folder


def results_table(results: dict[str, dict[str, float]]) -> Table:
    table = Table("model", *MEASURES)
    for name, values in results.items():
        table.add_row(name, *(f"{values[m]:.4f}" for m in MEASURES))
    return table


def _command() -> str:
    invoked = Path(sys.argv[0]).name in {"sieve", "cli.py", "__main__.py"}
    return shlex.join(["sieve", *sys.argv[1:]]) if invoked else ""


def _load(
    data: Path, qrels: str | None, max_queries: int | None, held_out: float, seed: int
) -> tuple[LabelledData, LabelledData, LabelledData]:
    try:
        labelled = load_labelled(data, qrels=qrels, max_queries=max_queries)
        train, held = split_by_query(labelled, held_out, seed=seed)
    except (TrainingDataError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not train.queries:
        raise typer.BadParameter(f"{data}: no query left to train on (lower --held-out or add labels)")
    console.print(
        f"data: {labelled.source}: {len(train.queries)} train / {len(held.queries)} held-out queries, "
        f"{len(labelled.passages)} passages"
    )
    return labelled, train, held


def _finish(
    folder: Path, kind: str, base: str, report: dict[str, Any], extra: dict[str, Any], keep: bool
) -> None:
    if not keep:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        (folder / "prepared.json").unlink(missing_ok=True)
    write_eval(folder, report)
    manifest = write_manifest(folder, kind, base, {**extra, "eval": report["results"]})
    console.print(results_table(report["results"]))
    console.print(f"{kind} revision {manifest['revision']}: {folder}")


@train_app.command("embedder")
def train_embedder_cmd(
    data: DataOpt,
    qrels: QrelsOpt = None,
    base: Annotated[str | None, typer.Option(help="Model folder or hub id (default: bundled MiniLM)")] = None,
    out: OutOpt = Path(".sieve/models"),
    epochs: EpochsOpt = 1.0,
    batch_size: Annotated[int, typer.Option(help="Queries per batch (in-batch negatives)")] = 32,
    lr: LrOpt = None,
    max_steps: StepsOpt = -1,
    hard_negatives: NegOpt = 1,
    held_out: HeldOpt = 0.1,
    resume: ResumeOpt = False,
    device: DeviceOpt = "cpu",
    lora_r: LoraOpt = 16,
    max_queries: MaxQOpt = None,
    seed: SeedOpt = 0,
    eval_corpus_limit: PoolOpt = None,
    save_steps: SaveOpt = 50,
    keep_checkpoints: KeepOpt = False,
    max_seq_length: SeqOpt = None,
) -> None:
    """Fine-tune the dense embedder (MultipleNegativesRankingLoss: in-batch + mined hard negatives)."""
    from retrieval.backends.training import EmbedderTrainConfig, is_qwen3, resolve_base, train_embedder

    logging.basicConfig(level=logging.WARNING)
    labelled, train, held = _load(data, qrels, max_queries, held_out, seed)
    base_ref = resolve_base(base)
    qwen3 = is_qwen3(base_ref)
    config = EmbedderTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr if lr is not None else (1e-4 if qwen3 else 2e-5),
        max_steps=max_steps,
        save_steps=save_steps,
        seed=seed,
        device=device,
        lora_r=lora_r,
        max_seq_length=max_seq_length,
    )
    settings = {
        "base": base_ref,
        "data": labelled.source,
        "digest": labelled.digest,
        "held_out": held_out,
        "max_queries": max_queries,
        "hard_negatives": hard_negatives,
        "eval_corpus_limit": eval_corpus_limit,
        "config": config.__dict__,
    }
    folder = open_run(out, "embedder", resume, settings)
    ids = passage_pool(labelled, eval_corpus_limit, seed)
    pool_texts = [labelled.passages[p] for p in ids]
    cache = folder / "prepared.json"
    if cache.exists():
        prepared = json.loads(cache.read_text(encoding="utf-8"))
    else:
        embedder = sieve_embedder(base_ref, device)
        pool = embed(embedder, pool_texts, query=False, label="base: embed passages")
        train_q = embed(embedder, list(train.queries.values()), query=True, label="base: embed train queries")
        held_q = embed(
            embedder, list(held.queries.values()), query=True, label="base: embed held-out queries"
        )
        scores, _ = exact_search(train_q, pool, ids, 1)
        rows = rows_for(train, scores, ids, hard_negatives, seed)
        _, top = exact_search(held_q, pool, ids, 100)
        before = rank_metrics(held.qrels, dict(zip(held.queries, top, strict=True))) if held.queries else None
        prepared = {"rows": rows, "before": before}
        cache.write_text(json.dumps(prepared), encoding="utf-8")
    console.print(f"training on {len(prepared['rows'])} rows in {folder}")
    stats = train_embedder(base_ref, prepared["rows"], folder, folder / "checkpoints", config, resume=resume)
    results: dict[str, dict[str, float]] = {}
    if held.queries:
        trained = sieve_embedder(str(folder), device)
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
        "command": _command(),
    }
    extra = {"data": report["data"], "hyper_parameters": config.__dict__ | {"hard_negatives": hard_negatives}}
    _finish(folder, "embedder", base_ref, report, extra, keep_checkpoints)


@train_app.command("reranker")
def train_reranker_cmd(
    data: DataOpt,
    base: Annotated[str | None, typer.Option(help="Cross-encoder or Qwen3-Reranker folder / hub id")] = None,
    kind: Annotated[
        str | None, typer.Option(help="cross-encoder or qwen3 (default: from the config)")
    ] = None,
    qrels: QrelsOpt = None,
    embedder: Annotated[str | None, typer.Option(help="Stage-1 model for mining and eval")] = None,
    out: OutOpt = Path(".sieve/models"),
    epochs: EpochsOpt = 1.0,
    batch_size: Annotated[int, typer.Option(help="Pairs (cross-encoder) or queries (qwen3) per batch")] = 16,
    lr: LrOpt = None,
    max_steps: StepsOpt = -1,
    hard_negatives: NegOpt = 3,
    held_out: HeldOpt = 0.1,
    resume: ResumeOpt = False,
    device: DeviceOpt = "cpu",
    lora_r: LoraOpt = 16,
    max_queries: MaxQOpt = None,
    seed: SeedOpt = 0,
    eval_corpus_limit: PoolOpt = None,
    rerank_depth: Annotated[int, typer.Option(help="Stage-1 candidates reranked per held-out query")] = 20,
    save_steps: SaveOpt = 50,
    keep_checkpoints: KeepOpt = False,
) -> None:
    """Fine-tune a reranker on hard negatives mined with the stage-1 embedder; eval by reranking its top-k."""
    from reranking.backends.training import RerankerTrainConfig, reranker_kind, train_reranker
    from retrieval.backends.training import resolve_base

    logging.basicConfig(level=logging.WARNING)
    if base is None:
        raise typer.BadParameter(
            "pass --base: a cross-encoder folder or hub id to fine-tune, "
            "or a Qwen3-Reranker folder (with a GPU)"
        )
    kind = kind or reranker_kind(base) or "cross-encoder"
    if kind not in {"cross-encoder", "qwen3"}:
        raise typer.BadParameter(f"--kind {kind!r}: use cross-encoder or qwen3")
    labelled, train, held = _load(data, qrels, max_queries, held_out, seed)
    embedder_ref = resolve_base(embedder)
    config = RerankerTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr if lr is not None else (1e-4 if kind == "qwen3" else 2e-5),
        max_steps=max_steps,
        save_steps=save_steps,
        seed=seed,
        device=device,
        lora_r=lora_r,
    )
    settings = {
        "base": base,
        "kind": kind,
        "embedder": embedder_ref,
        "data": labelled.source,
        "digest": labelled.digest,
        "held_out": held_out,
        "max_queries": max_queries,
        "hard_negatives": hard_negatives,
        "eval_corpus_limit": eval_corpus_limit,
        "rerank_depth": rerank_depth,
        "config": config.__dict__,
    }
    folder = open_run(out, "reranker", resume, settings)
    ids = passage_pool(labelled, eval_corpus_limit, seed)
    cache = folder / "prepared.json"
    if cache.exists():
        prepared = json.loads(cache.read_text(encoding="utf-8"))
    else:
        stage1 = sieve_embedder(embedder_ref, device)
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
            base_model = sieve_reranker(kind, base, device)
            results["before"] = rank_metrics(
                held.qrels, rerank_candidates(base_model, candidates, held, "base: rerank")
            )
        rows = rows_for(train, scores, ids, hard_negatives, seed)
        prepared = {"rows": rows, "candidates": candidates, "results": results}
        cache.write_text(json.dumps(prepared), encoding="utf-8")
    console.print(f"training on {len(prepared['rows'])} groups in {folder}")
    stats = train_reranker(
        kind, base, prepared["rows"], folder, folder / "checkpoints", config, resume=resume
    )
    results = dict(prepared["results"])
    if held.queries:
        trained = sieve_reranker(kind, str(folder), device)
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
        "command": _command(),
    }
    extra = {
        "reranker_kind": kind,
        "data": report["data"],
        "hyper_parameters": config.__dict__ | {"hard_negatives": hard_negatives},
    }
    _finish(folder, "reranker", base, report, extra, keep_checkpoints)
