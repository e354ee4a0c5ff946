"""Benchmark: the service scaled out on one machine as real processes — ingest throughput with 1, 2 and 4
Celery workers, and search latency while they ingest.

    nice -n 19 python tests/benchmarks/bench_scaleout.py --documents 200 --out bench_scaleout_cpu.md
    # the same with the APIs' searches at consistency Bounded (the workers keep the default, Strong)
    nice -n 19 python tests/benchmarks/bench_scaleout.py --documents 200 --out bench_scaleout_cpu_bounded.md \
        --api-env RETRIEVAL_CONSISTENCY_LEVEL=Bounded
    python tests/benchmarks/bench_scaleout.py --documents 30 --workers 1,2       # a quick check of the script

What runs, each a process of its own, in a temporary home:

- Milvus 2.3 standalone from the ``milvus`` PyPI package (``tests.support.services.start_milvus_server``):
  dense vectors only, as Milvus has no BM25 before 2.5, so every search is ``mode`` dense;
- Redis (``api.cli.stack.Stack.start_redis``: password, append-only file): broker, job states, records;
- two API processes (``python -m api.cli serve --port P``, as ``sieve up`` starts one) sharing that Redis,
  that Milvus and one ``INGEST_DATA_DIR``, behind a local TCP proxy, round-robin per connection
  (``tests.support.tcp_proxy``; this machine has no nginx or haproxy);
- 1, then 2, then 4 ingest workers (``python -m api.cli worker``, as ``sieve up`` starts it: Celery prefork,
  ``--concurrency 1``, the default; each loads its own MiniLM at start). The count grows between phases
  (the workers of a phase stay for the next).

Settings are the product's defaults (MiniLM on CPU, no reranker) except: result cache off (queries repeat),
rate limit off (one client of many tenants' worth of load), search mode dense (see above); ``--api-env``
sets more on the API processes only.

Each phase: ``--documents`` new text documents (``--words`` words each, a few KB: sentences drawn from the
SciFact abstracts, ``tests.support.search_corpus.Corpus``) are uploaded through the proxy, one file per
``POST /v1/documents``, ``--uploaders`` at a time, while ``--clients`` closed-loop search clients
(``tests.support.loadgen``, keep-alive) send ``POST /v1/search`` (SciFact claims, top 10) through the proxy.
The phase ends when every job is done or failed (job states read from Redis); documents/s and chunks/s are
over the time from the first upload to the last job's end, and the search figures over the same window.
Before the phases, ``--warmup-docs`` documents go through one worker (the collection is made then); after
them, the baseline: the same clients search for ``--baseline-s`` with no ingest running, over the whole
collection.

Prints a Markdown table; ``--out NAME`` writes it to tests/benchmarks/results/NAME.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402

from api.cli import procs  # noqa: E402
from api.cli.stack import Stack, wait_for, wait_ready  # noqa: E402
from tests.support.loadgen import Answer, Client, Run, percentile  # noqa: E402
from tests.support.search_corpus import Corpus  # noqa: E402
from tests.support.services import free_port, start_milvus_server, stop_process  # noqa: E402

RESULTS = ROOT / "tests" / "benchmarks" / "results"
TERMINAL = ("done", "failed")
COMMAND = "nice -n 19 python tests/benchmarks/bench_scaleout.py --documents 200 --out bench_scaleout_cpu.md"
BOUNDED = f"{COMMAND.removesuffix('.md')}_bounded.md --api-env RETRIEVAL_CONSISTENCY_LEVEL=Bounded"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog=f"The committed tables: {COMMAND} ; {BOUNDED}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workers", default="1,2,4", help="ingest worker counts, one phase each, increasing")
    p.add_argument("--documents", type=int, default=200, help="documents uploaded per phase")
    p.add_argument("--words", type=int, default=600, help="words per document (~4 KB, ~4 chunks)")
    p.add_argument("--uploaders", type=int, default=4, help="uploads in flight at once")
    p.add_argument("--clients", type=int, default=4, help="closed-loop search clients")
    p.add_argument("--warmup-docs", type=int, default=8, help="documents ingested before the phases")
    p.add_argument("--baseline-s", type=float, default=30.0, help="seconds of search alone at the end")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--phase-timeout-s", type=float, default=3600.0, help="give up on a phase after this")
    p.add_argument("--scifact", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--api-env", action="append", default=[], help="NAME=VALUE for the API processes only (repeat)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary home (logs) at the end")
    p.add_argument("--out", help="file name under tests/benchmarks/results/")
    args = p.parse_args(argv)
    args.worker_counts = [int(c) for c in args.workers.split(",") if c.strip()]
    if args.worker_counts != sorted(args.worker_counts) or not args.worker_counts:
        p.error("--workers: increasing counts, e.g. 1,2,4 (workers are added between phases)")
    return args


# -- the processes -------------------------------------------------------------------------------------------
@dataclass
class Fleet:
    """The processes this benchmark starts besides Milvus and Redis, each in a session of its own with a
    parent-death signal (as ``sieve up`` starts its children), with the stack's environment."""

    stack: Stack
    env: dict[str, str]
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def spawn(
        self, name: str, argv: list[str], deathsig: int = signal.SIGTERM, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.stack.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.stack.env(), **self.env, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                procs.with_parent_death(argv, deathsig),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs.append((name, proc, log_path))
        return proc, log_path

    def workers(self) -> int:
        return sum(1 for name, _, _ in self.procs if name.startswith("worker"))

    def dead(self) -> list[str]:
        return [f"{name} (exit {proc.returncode})" for name, proc, _ in self.procs if proc.poll() is not None]

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop_process(proc, grace=20)


def start_apis(fleet: Fleet, count: int, env: dict[str, str]) -> list[str]:
    """``count`` API processes on free ports; returns their URLs once each answers /ready."""
    started = []
    for i in range(count):
        port = free_port()
        proc, log_path = fleet.spawn(
            f"api-{i + 1}", [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env
        )
        started.append((f"http://127.0.0.1:{port}", proc, log_path))
    for url, proc, log_path in started:
        wait_ready(url, what=f"the API at {url}", timeout=300, proc=proc, log=log_path)
    return [url for url, _, _ in started]


def start_proxy(fleet: Fleet, backends: list[str]) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.tcp_proxy", "--listen", f"127.0.0.1:{port}"]
    for url in backends:
        argv += ["--backend", urlsplit(url).netloc]
    proc, log_path = fleet.spawn("proxy", argv)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, what="the proxy", timeout=60, proc=proc, log=log_path)
    return url


def add_workers(fleet: Fleet, target: int) -> None:
    """Start workers until ``target`` run; wait until each is ``ready.`` and its pool process has loaded its
    model (Celery says ``ready.`` before that: a task it takes meanwhile waits for the load)."""
    new = []
    while fleet.workers() < target:
        name = f"worker-{fleet.workers() + 1}"
        new.append(fleet.spawn(name, [sys.executable, "-m", "api.cli", "worker"], deathsig=signal.SIGKILL))
    for proc, log_path in new:
        wait_for(
            lambda log_path=log_path: all(
                mark in log_path.read_text(errors="replace") for mark in (" ready.", " loaded ")
            ),
            what=f"the worker logging to {log_path.name}",
            timeout=600,
            proc=proc,
            log=log_path,
        )


# -- one phase -----------------------------------------------------------------------------------------------
@dataclass
class Phase:
    label: str
    workers: int
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0
    uploads: Counter[int] = field(default_factory=Counter)
    failed_jobs: int = 0
    unfinished_jobs: int = 0
    search: Run = field(default_factory=lambda: Run(0))


async def search_until(url: str, key: str, bodies: list[bytes], clients: int, stop: asyncio.Event) -> Run:
    """``clients`` closed-loop search clients until ``stop`` is set; the run's window is theirs."""
    client = Client(url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    run = Run(clients)
    run.started = time.perf_counter()

    async def one(c: int) -> None:
        i = c
        while not stop.is_set():
            sent = time.perf_counter()
            status, payload, retry_after = await client.request("POST", "/v1/search", bodies[i % len(bodies)])
            answer = Answer(sent, (time.perf_counter() - sent) * 1000, status)
            if status == 200:
                answer.timings = json.loads(payload).get("timings_ms")
            run.answers.append(answer)
            if retry_after > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=retry_after)
            i += clients

    try:
        await asyncio.gather(*(one(c) for c in range(clients)))
    finally:
        client.close()
    run.seconds = time.perf_counter() - run.started
    return run


def job_states(redis_url: str, job_ids: list[str]) -> dict[str, tuple[str, float, int]]:
    """(state, last update, chunks_total) of each job, read from Redis directly (no API calls to count)."""
    import redis

    from ingestion import keyspace

    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    try:
        pipe = client.pipeline()
        for job_id in job_ids:
            pipe.hmget(keyspace.job(job_id), ["state", "updated_at", "chunks_total"])
        return {
            j: (state or "", float(updated or 0), int(total or 0))
            for j, (state, updated, total) in zip(job_ids, pipe.execute(), strict=True)
        }
    finally:
        client.close()


async def ingest(
    phase: Phase, url: str, key: str, redis_url: str, docs: list[tuple[str, str]], args: argparse.Namespace
) -> None:
    """Upload ``docs`` (id, text) through the proxy, wait until every job ends; fills ``phase``."""
    jobs: list[str] = []
    started = time.time()
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        queue = list(reversed(docs))

        async def uploader() -> None:
            while queue:
                document_id, text = queue.pop()
                try:
                    answer = await http.post(
                        "/v1/documents",
                        files=[("files", (f"{document_id}.txt", text.encode(), "text/plain"))],
                        data={"document_id": document_id},
                    )
                except httpx.HTTPError:
                    phase.uploads[0] += 1
                    continue
                phase.uploads[answer.status_code] += 1
                if answer.status_code == 202:
                    jobs.extend(job["job_id"] for job in answer.json()["jobs"])

        await asyncio.gather(*(uploader() for _ in range(args.uploaders)))
    log(f"  {len(jobs)} uploads accepted in {time.time() - started:.1f} s; waiting for the jobs")
    deadline = time.monotonic() + args.phase_timeout_s
    states: dict[str, tuple[str, float, int]] = {}
    last_note = time.monotonic()
    while time.monotonic() < deadline:
        states = await asyncio.to_thread(job_states, redis_url, jobs)
        if all(state in TERMINAL for state, _, _ in states.values()):
            break
        if time.monotonic() - last_note > 30:
            done = sum(1 for s, _, _ in states.values() if s in TERMINAL)
            log(f"  {done}/{len(jobs)} jobs ended")
            last_note = time.monotonic()
        await asyncio.sleep(0.25)
    ended = [(s, t, n) for s, t, n in states.values() if s in TERMINAL]
    phase.documents = sum(1 for s, _, _ in ended if s == "done")
    phase.failed_jobs = sum(1 for s, _, _ in ended if s == "failed")
    phase.unfinished_jobs = len(jobs) - len(ended)
    phase.chunks = sum(n for s, _, n in ended if s == "done")
    phase.seconds = (max((t for _, t, _ in ended), default=time.time())) - started


async def run_phase(
    phase: Phase,
    url: str,
    key: str,
    redis_url: str,
    docs: list[tuple[str, str]],
    bodies: list[bytes],
    args: argparse.Namespace,
) -> None:
    stop = asyncio.Event()
    searching = asyncio.create_task(search_until(url, key, bodies, args.clients, stop))
    try:
        await ingest(phase, url, key, redis_url, docs, args)
    finally:
        stop.set()
        phase.search = await searching


async def baseline(url: str, key: str, bodies: list[bytes], args: argparse.Namespace) -> Run:
    stop = asyncio.Event()
    searching = asyncio.create_task(search_until(url, key, bodies, args.clients, stop))
    await asyncio.sleep(args.baseline_s)
    stop.set()
    return await searching


# -- the table -----------------------------------------------------------------------------------------------
def row(label: str, phase: Phase | None, run: Run) -> str:
    latencies = run.latencies()
    other = len(run.answers) - run.count(200) - run.count(429)
    if phase is None:
        ingest_cells = ["—", "—", "—"]
        errors = other
    else:
        ingest_cells = [
            f"{phase.documents} in {phase.seconds:.0f} s",
            f"{phase.documents / phase.seconds:.2f}" if phase.seconds else "n/a",
            f"{phase.chunks / phase.seconds:.1f}" if phase.seconds else "n/a",
        ]
        upload_errors = sum(n for status, n in phase.uploads.items() if status != 202)
        errors = other + upload_errors + phase.failed_jobs + phase.unfinished_jobs
    cells = [
        label,
        *ingest_cells,
        f"{run.throughput():.1f}",
        *(f"{percentile(latencies, q):.0f}" for q in (50, 95, 99)),
        *(f"{run.stage_means().get(stage, float('nan')):.0f}" for stage in ("embed", "stage1")),
        str(run.count(429)),
        str(errors),
    ]
    return "| " + " | ".join(cells) + " |"


def header(args: argparse.Namespace, facts: dict[str, str], corpus: Corpus) -> list[str]:
    load = os.getloadavg()
    return [
        "Scale-out on one machine, real processes: Milvus "
        f"{facts['milvus']} standalone (the `milvus` package; dense only: no BM25 before 2.5, so searches "
        f"are mode dense), Redis {facts['redis']}, 2 API processes (uvicorn, `sieve serve`) behind a local "
        "TCP proxy (round-robin per connection, tests/support/tcp_proxy.py), "
        f"{' → '.join(str(c) for c in args.worker_counts)} Celery ingest workers "
        "(`sieve worker`: prefork, --concurrency 1 each, the default; MiniLM on CPU, torch's default "
        "threads).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {facts['memory']}; load average "
        f"{facts['load_start']} at the start, {load[0]:.1f} at the end{facts['busy']}. Workers, APIs, "
        "Milvus, Redis, the proxy and the load generator all share these cores: a worker added here takes "
        "cores from the others, not new ones, and the table shows that contention as it is (not how workers "
        "on machines of their own scale).",
        f"Ingest: per phase {args.documents} new text documents of ~{args.words} words ({corpus.source}), "
        f"one file per POST /v1/documents through the proxy, {args.uploaders} uploads in flight; "
        "docs/s and chunks/s from the first upload to the last job's end (states read from Redis). "
        f"Search: {args.clients} closed-loop clients (keep-alive) through the proxy, POST /v1/search "
        f"(SciFact claims, mode dense, top_k {args.top_k}) during the same window; milliseconds at the "
        "client. "
        "embed and Milvus: the API's mean milliseconds of the query embedding and of the Milvus search "
        "(`timings_ms`: embed, stage1). Settings: product defaults (Milvus consistency Strong), except "
        "result cache off and rate limit off; no reranker"
        + "".join(f"; {item} on the APIs" for item in args.api_env)
        + ".",
        f"Errors: search answers other than 200/429, uploads not accepted, jobs failed or not ended. "
        f"Command: `nice -n 19 python tests/benchmarks/bench_scaleout.py {shlex.join(sys.argv[1:])}`.",
    ]


def memory_text() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    return "RAM unknown"


def main() -> None:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    load_start = os.getloadavg()[0]
    corpus = Corpus(
        args.warmup_docs + args.documents * len(args.worker_counts),
        words=args.words,
        scifact=args.scifact,
        seed=args.seed,
    )
    texts = list(corpus.passages())
    bodies = [
        json.dumps({"query": q, "mode": "dense", "top_k": args.top_k}).encode() for q in corpus.queries(200)
    ]
    phases: list[Phase] = []
    facts = {"memory": memory_text(), "load_start": f"{load_start:.1f}", "busy": ""}
    try:
        with contextlib.ExitStack() as stack_of_exits:
            log("starting Milvus 2.3 standalone (about 12 s)")
            _, milvus_uri = stack_of_exits.enter_context(start_milvus_server(home / "milvus" / "data"))
            from pymilvus import MilvusClient

            probe = MilvusClient(uri=milvus_uri)
            facts["milvus"] = str(probe.get_server_version())
            probe.close()
            stack = Stack(
                home=home / "stack",
                redis_port=free_port(),
                milvus_port=int(urlsplit(milvus_uri).port or 0),
                api_port=free_port(),
            )
            stack.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            stack_of_exits.callback(stack.stop)
            log("starting Redis")
            stack.start_redis()
            import redis

            info = redis.Redis.from_url(stack.redis_url).info("server")
            facts["redis"] = str(info.get("redis_version", "?"))
            fleet = Fleet(
                stack,
                {
                    "RETRIEVAL_MILVUS_URI": milvus_uri,
                    "RETRIEVAL_SEARCH_MODE": "dense",
                    "RETRIEVAL_LEXICAL_DIR": "",
                    "API_CACHE_TTL_S": "0",
                    "API_RATE_LIMIT_PER_S": "0",
                },
            )
            stack_of_exits.callback(fleet.stop)
            log("starting 2 API processes (each loads MiniLM)")
            apis = start_apis(fleet, 2, dict(item.split("=", 1) for item in args.api_env))
            url = start_proxy(fleet, apis)
            key = stack.api_key()
            log(f"APIs {apis} behind the proxy at {url}")
            add_workers(fleet, 1)
            cursor, warm_chunks = 0, 0
            if args.warmup_docs:
                log(f"warm-up: {args.warmup_docs} documents through 1 worker")
                warm = Phase("warm-up", 1)
                docs = [(f"warm-{i}", texts[i]) for i in range(args.warmup_docs)]
                asyncio.run(run_phase(warm, url, key, stack.redis_url, docs, bodies, args))
                cursor, warm_chunks = args.warmup_docs, warm.chunks
                log(f"  warm-up: {warm.documents} documents, {warm.chunks} chunks in {warm.seconds:.0f} s")
            for count in args.worker_counts:
                add_workers(fleet, count)
                if fleet.dead():
                    raise RuntimeError(f"processes died: {fleet.dead()}")
                log(f"phase: {count} workers, {args.documents} documents")
                phase = Phase(f"{count}", count)
                docs = [(f"w{count}-{i}", texts[cursor + i]) for i in range(args.documents)]
                cursor += args.documents
                asyncio.run(run_phase(phase, url, key, stack.redis_url, docs, bodies, args))
                phases.append(phase)
                write(args, table(args, facts, corpus, phases, None, 0))
                log(
                    f"  {phase.documents} docs, {phase.chunks} chunks in {phase.seconds:.1f} s; search "
                    f"{phase.search.throughput():.1f}/s p50 {percentile(phase.search.latencies(), 50):.0f} ms"
                )
            log(f"baseline: search alone for {args.baseline_s:g} s")
            alone = asyncio.run(baseline(url, key, bodies, args))
            if fleet.dead():
                raise RuntimeError(f"processes died: {fleet.dead()}")
            total_chunks = warm_chunks + sum(p.chunks for p in phases)
    finally:
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    if load_start > 1.0:
        facts["busy"] = " (a busy machine: other work ran beside the benchmark)"
    text = table(args, facts, corpus, phases, alone, total_chunks)
    print(text)
    write(args, text)


def table(
    args: argparse.Namespace,
    facts: dict[str, str],
    corpus: Corpus,
    phases: list[Phase],
    alone: Run | None,
    total_chunks: int,
) -> str:
    head = ["workers", "documents", "docs/s", "chunks/s", "search q/s", "p50", "p95", "p99"]
    head += ["embed", "Milvus", "429", "errors"]
    lines = [*header(args, facts, corpus), "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    if alone is not None:
        lines.append(row(f"0 (search alone, {total_chunks} chunks)", None, alone))
    lines += [row(p.label, p, p.search) for p in phases]
    if alone is None:
        lines += ["", "PARTIAL: the run has not finished (the phases done so far)."]
    return "\n".join(lines)


def write(args: argparse.Namespace, text: str) -> None:
    if args.out:
        name = args.out if args.out.endswith(".md") else args.out + ".md"
        (RESULTS / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
