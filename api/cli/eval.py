"""``sieve eval``: measure retrieval configurations on a BEIR folder (``api.relevance.eval_run``), print the
summary and, with ``--gate --apply``, store the rerank gate's decision."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from api.cli.common import RedisOpt, command_line, console, setup_logging
from api.cli.gate import gate_store
from api.cli.stack import Stack, free_port
from retrieval import VectorStore
from retrieval.fusion import DEFAULT_FUSION


def eval_command(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="BEIR-layout folder")],
    out: Annotated[Path, typer.Option(help="Report folder (.md, .json, chart)")] = Path("eval-report"),
    milvus_uri: Annotated[
        str | None,
        typer.Option(
            help="Use this Milvus (memory:// in-process); default: start a Milvus Lite server of its own"
        ),
    ] = None,
    qrels: Annotated[str | None, typer.Option(help="qrels/NAME.tsv (default: test, or the only one)")] = None,
    split: Annotated[str, typer.Option(help="Queries: all, eval (sha256(id) % 5 == 0) or train")] = "all",
    queries: Annotated[int | None, typer.Option(help="N queries drawn at random (--seed)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --queries sample")] = 0,
    corpus_limit: Annotated[int | None, typer.Option(help="First N documents (+ the judged ones)")] = None,
    modes: Annotated[
        str, typer.Option(help="Stage-1 modes, comma-separated (bm25 alone embeds nothing)")
    ] = "bm25,dense,hybrid",
    aggregate: Annotated[
        str,
        typer.Option(
            help="A document's score from its chunks: best (its best chunk) and/or sum (of its top "
            "--aggregate-chunks), comma-separated; each adds configurations"
        ),
    ] = "best",
    aggregate_chunks: Annotated[int, typer.Option(help="Chunks summed by --aggregate sum")] = 3,
    context: Annotated[
        bool, typer.Option(help="Index each chunk with its document's title (--no-context: title in chunk 1)")
    ] = True,
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: zscore, rrf or weighted")] = DEFAULT_FUSION,
    rrf_k: Annotated[int, typer.Option(help="RRF k")] = 60,
    weights: Annotated[str | None, typer.Option(help="Hybrid weights 'dense,bm25'")] = None,
    rerank_depth: Annotated[int, typer.Option(help="Documents the reranker scores")] = 50,
    rerank_modes: Annotated[
        str | None,
        typer.Option(
            help="Modes with +rerank configurations, comma-separated (default RETRIEVAL_SEARCH_MODE)"
        ),
    ] = None,
    keep_index: Annotated[bool, typer.Option(help="Keep the collection (with --milvus-uri)")] = False,
    gate: Annotated[
        bool,
        typer.Option(
            help="Learn the stage-1 configuration and the rerank fusion on train queries, decide both gates "
            "on the eval split"
        ),
    ] = False,
    gate_train_queries: Annotated[int, typer.Option(help="Train-split queries to learn the fusion on")] = 100,
    min_gain: Annotated[float, typer.Option(help="Gate: the nDCG@10 gain stage 2 must show")] = 0.005,
    gate_alpha: Annotated[float, typer.Option(help="Gate: the paired t-test's p must be below this")] = 0.05,
    tenant: Annotated[
        str, typer.Option(help="With --apply: the tenant the decision is stored for")
    ] = "default",
    apply: Annotated[bool, typer.Option(help="Store the gate's decision in the stack's Redis")] = False,
    redis_url: RedisOpt = "redis://127.0.0.1:6390/0",
) -> None:
    """Measure BM25, dense and hybrid retrieval (each also with the configured reranker) on a BEIR folder."""
    from api.relevance.eval_options import EvalOptions
    from api.relevance.eval_run import parse_weights, run, summary_rows
    from ingestion.settings import IngestSettings
    from retrieval.settings import RetrievalSettings

    setup_logging("WARNING")
    ingest = IngestSettings()
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    default_mode = RetrievalSettings().search_mode
    rerank_list = (
        tuple(m.strip() for m in rerank_modes.split(",") if m.strip())
        if rerank_modes
        else (default_mode,)
        if default_mode in mode_list
        else mode_list[-1:]
    )
    options = EvalOptions(
        modes=mode_list,
        rerank_modes=rerank_list,
        fusion=fusion,
        rrf_k=rrf_k,
        weights=parse_weights(weights),
        rerank_depth=rerank_depth,
        chunk_tokens=ingest.chunk_tokens,
        chunk_overlap=ingest.chunk_overlap,
        context=context,
        aggregations=tuple(a.strip() for a in aggregate.split(",") if a.strip()),
        aggregate_chunks=aggregate_chunks,
        gate=gate,
        min_gain=min_gain,
        gate_alpha=gate_alpha,
    )
    try:
        with eval_store(milvus_uri, keep=keep_index) as (store, label):
            report = run(
                folder,
                out,
                store=store,
                store_label=label,
                qrels=qrels,
                split=split,
                max_queries=queries,
                seed=seed,
                corpus_limit=corpus_limit,
                options=options,
                gate_train_queries=gate_train_queries,
                console=console,
                command=command_line(),
            )
    except ValueError as exc:  # a folder not in the BEIR layout, an unknown mode or split
        raise typer.BadParameter(str(exc)) from exc
    table = Table("configuration", "nDCG@10", "R@50", "R@100", "MRR@10")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"report: {out / 'report.md'}")
    if "gate" in report["files"]:
        from api.gate_decision import GateDecision

        decision = GateDecision.model_validate(report["gate"])
        colour = "green" if decision.enabled else "yellow"
        if decision.stage1 is not None:
            stage1 = decision.stage1
            verdict = "adopted" if stage1.adopted else "default kept"
            console.print(
                f"[{'green' if stage1.adopted else 'yellow'}]stage 1: {stage1.serving.label} ({verdict})[/] "
                f"— {stage1.reason}"
            )
        console.print(
            f"[{colour}]rerank gate: {'enabled' if decision.enabled else 'disabled'}[/] — {decision.reason}"
        )
        console.print(f"decision: {report['files']['gate']}")
        if apply:
            gate_store(redis_url).put(tenant, decision)
            console.print(f"stored for tenant {tenant!r} at {redis_url}")
    elif apply:
        console.print("[red]nothing to apply:[/] no gate decision (pass --gate)")
        raise typer.Exit(1)


@contextmanager
def stop_on_signals(cleanup: Callable[[], None]) -> Iterator[None]:
    """Within the block SIGTERM and SIGINT run ``cleanup`` (stop the Milvus Lite server, remove the temporary
    folder) and end the process with 128 + the signal's number. Cleaning up in the handler itself, rather than
    raising and trusting ``finally`` blocks, holds whatever the interrupted code was doing: a client library
    that catches the exception, or a wait on a subprocess, cannot keep the server alive."""

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second signal ends the process at once
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            cleanup()
        finally:
            sys.stderr.write(f"sieve eval: stopped by signal {signum}; its Milvus Lite server is stopped\n")
            sys.stderr.flush()
            os._exit(128 + signum)

    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def eval_store(milvus_uri: str | None, *, keep: bool = False) -> Iterator[tuple[VectorStore, str]]:
    """A store on a fresh collection: at ``milvus_uri`` (``memory://`` for in-process), else on a Milvus Lite
    server started here in a temporary folder (``Stack.start_milvus``) and stopped afterwards, also when the
    run is interrupted (Ctrl-C) or terminated (SIGTERM)."""
    from retrieval.backends import make_store
    from retrieval.settings import RetrievalSettings

    collection = f"sieve_eval_{uuid.uuid4().hex[:10]}"
    started: list[Stack] = []

    def cleanup() -> None:
        for stack in started:
            stack.stop()
        shutil.rmtree(home, ignore_errors=True)

    home = tempfile.mkdtemp(prefix="sieve-eval-")
    with stop_on_signals(cleanup), contextlib.ExitStack() as remove:
        remove.callback(shutil.rmtree, home, ignore_errors=True)
        stack = None
        try:
            if milvus_uri is None:
                stack = Stack(home=Path(home), milvus_port=free_port())
                started.append(stack)
                stack.start_milvus()
                milvus_uri = stack.milvus_uri
            settings = RetrievalSettings(milvus_uri=milvus_uri, collection=collection)
            if stack is not None:  # a server started here: the embedded lexical index, as in `sieve up`
                settings = settings.model_copy(update={"lexical_dir": str(Path(home) / "lexical")})
            store = make_store(settings)
            try:
                yield store, f"{type(store).__name__} at {milvus_uri}, collection {collection}"
            finally:
                drop, close = getattr(store, "drop", None), getattr(store, "close", None)
                if drop is not None and not keep and stack is None:
                    drop()
                if close is not None:
                    close()
        finally:
            if stack is not None:
                stack.stop()
