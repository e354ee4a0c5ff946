"""``sieve train embedder`` and ``sieve train reranker``: labelled data in, a versioned model folder out
(the run itself: ``api.relevance.train_run``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import command_line
from api.relevance.mining import MINERS
from api.relevance.train_run import RunOptions, TrainSetupError, run_embedder, run_reranker

train_app = typer.Typer(help="Fine-tune the embedder or the reranker on labelled data.", no_args_is_help=True)

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
MineOpt = Annotated[
    str, typer.Option(help="Mine hard negatives from: dense (the base model), bm25 or hybrid (RRF of both)")
]
SeqOpt = Annotated[int | None, typer.Option(help="Tokens per text while training (default: the model's)")]


def check_miner(miner: str) -> str:
    if miner not in MINERS:
        raise typer.BadParameter(f"--mine-with {miner!r}: use one of {', '.join(MINERS)}")
    return miner


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
    mine_with: MineOpt = "dense",
) -> None:
    """Fine-tune the dense embedder (MultipleNegativesRankingLoss: in-batch + mined hard negatives)."""
    logging.basicConfig(level=logging.WARNING)
    options = RunOptions(
        data=data,
        qrels=qrels,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_steps=max_steps,
        hard_negatives=hard_negatives,
        held_out=held_out,
        resume=resume,
        device=device,
        lora_r=lora_r,
        max_queries=max_queries,
        seed=seed,
        eval_corpus_limit=eval_corpus_limit,
        save_steps=save_steps,
        keep_checkpoints=keep_checkpoints,
        command=command_line(),
        mine_with=check_miner(mine_with),
    )
    try:
        run_embedder(options, base=base, max_seq_length=max_seq_length)
    except TrainSetupError as exc:
        raise typer.BadParameter(str(exc)) from exc


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
    mine_with: MineOpt = "dense",
) -> None:
    """Fine-tune a reranker on hard negatives mined with the stage-1 embedder; eval by reranking its top-k."""
    from reranking.backends.training import reranker_kind

    logging.basicConfig(level=logging.WARNING)
    if base is None:
        raise typer.BadParameter(
            "pass --base: a cross-encoder folder or hub id to fine-tune, "
            "or a Qwen3-Reranker folder (with a GPU)"
        )
    kind = kind or reranker_kind(base) or "cross-encoder"
    if kind not in {"cross-encoder", "qwen3"}:
        raise typer.BadParameter(f"--kind {kind!r}: use cross-encoder or qwen3")
    options = RunOptions(
        data=data,
        qrels=qrels,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_steps=max_steps,
        hard_negatives=hard_negatives,
        held_out=held_out,
        resume=resume,
        device=device,
        lora_r=lora_r,
        max_queries=max_queries,
        seed=seed,
        eval_corpus_limit=eval_corpus_limit,
        save_steps=save_steps,
        keep_checkpoints=keep_checkpoints,
        command=command_line(),
        mine_with=check_miner(mine_with),
    )
    try:
        run_reranker(options, kind=kind, base=base, embedder=embedder, rerank_depth=rerank_depth)
    except TrainSetupError as exc:
        raise typer.BadParameter(str(exc)) from exc
