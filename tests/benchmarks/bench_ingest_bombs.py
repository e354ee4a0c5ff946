"""Benchmark: hostile files against the product's ingestion worker (MiniLM, prefork, one pool process).

    .venv/bin/python tests/benchmarks/bench_ingest_bombs.py

A script, not a test. Starts its own Redis and Milvus Lite server in a temporary folder and one worker as
``sieve worker`` runs it (settings from the environment: the default limits unless INGEST_* say otherwise),
then uploads, one after another into the one queue: a .docx zip bomb (400 MiB unpacked), HTML of 100,000
nested <div>s, a .docx of 5,000 members, and a calm text file of another tenant. For each it prints how long
from upload to its final state, the state and the reason, and the peak RSS of the worker's processes sampled
every 20 ms (main process, pool process, a parse child once it runs the sandbox), summed and apart. Writes
the table to $OUT/bench_ingest_bombs.md when OUT is set.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import psutil  # noqa: E402

from ingestion.records import Job, JobState, Records  # noqa: E402
from ingestion.settings import IngestSettings  # noqa: E402
from ingestion.uploads import Uploads  # noqa: E402
from ingestion.worker import make_celery  # noqa: E402
from tests.support import bombs  # noqa: E402
from tests.support.ingest_services import celery_worker, redis_server  # noqa: E402
from tests.support.services import start_milvus_lite  # noqa: E402

QUEUE = "sieve.ingest.bench"
CALM = b"Swifts sleep on the wing and land only to nest; a young swift may fly for years. " * 40


class Peaks:
    """Peak RSS of a process tree: of the sum, and per role (the root, its direct child, deeper)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.total = 0
        self.by_role = {"main": 0, "pool": 0, "parse child": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            try:
                tree = [(self.root, "main")]
                for child in self.root.children():
                    tree.append((child, "pool"))
                    tree += [(grandchild, "parse child") for grandchild in child.children(recursive=True)]
            except psutil.Error:
                continue
            for proc, role in tree:
                try:
                    # a parse child counts once it runs the sandbox: right after fork, before exec, it
                    # shares (and psutil reports) the pool process's pages
                    if role == "parse child" and "ingestion.sandbox" not in proc.cmdline():
                        continue
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.by_role[role] = max(self.by_role[role], rss)
            self.total = max(self.total, total)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="sieve-bombs-"))
    with redis_server(home / "redis") as server, start_milvus_lite(home / "milvus") as (_, milvus_uri):
        env = {
            "INGEST_REDIS_URL": server.url,
            "INGEST_DATA_DIR": str(home / "files"),
            "INGEST_QUEUE": QUEUE,
            "RETRIEVAL_MILVUS_URI": milvus_uri,
            "RETRIEVAL_COLLECTION": "bench_bombs",
        }
        settings = IngestSettings(redis_url=server.url, data_dir=home / "files", queue=QUEUE)
        records = Records(server.url)
        uploads = Uploads(settings, records, make_celery(settings))
        with celery_worker(env, home / "worker.log", app="ingestion.worker:celery_app", queue=QUEUE) as proc:
            peaks = Peaks(proc.pid)
            peaks.start()
            warm = uploads.accept("calm", "warm-up.txt", CALM, document_id=None, metadata={})
            finish(records, {warm.id: time.monotonic()}, timeout=600)  # the model loads before the clock
            cases = [
                ("hostile", ".docx zip bomb (400 MiB unpacked)", "bomb.docx", bombs.docx_bomb(400)),
                ("hostile", "HTML, 100,000 nested <div>", "deep.html", bombs.nested_divs(100_000)),
                ("hostile", ".docx of 5,000 members", "many.docx", bombs.docx_with_members(5000)),
                ("calm", "text, another tenant", "swifts.txt", CALM + b" Later."),
            ]
            uploaded: dict[str, float] = {}
            jobs = []
            for tenant, what, name, data in cases:
                job = uploads.accept(tenant, name, data, document_id=None, metadata={})
                uploaded[job.id] = time.monotonic()
                jobs.append((what, len(data), job.id))
            ended = finish(records, uploaded, timeout=600)
            peaks.stop()
    lines = [
        f"# Hostile files against one ingestion worker ({platform.node()}, {os.cpu_count()} CPUs)",
        "",
        "Uploaded one after another into the one queue of one worker (MiniLM, prefork, one pool process).",
        "",
        "| file | bytes | state | seconds from upload | attempts | reason |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for what, size, job_id in jobs:
        job, seconds = ended[job_id]
        lines.append(
            f"| {what} | {size:,} | {job.state.value} | {seconds:.1f} | {job.attempts} | {job.error[:100]} |"
        )
    roles = ", ".join(f"{role} {rss / 2**20:.0f} MiB" for role, rss in peaks.by_role.items())
    lines += ["", f"Peak RSS of the worker's processes together: {peaks.total / 2**20:.0f} MiB ({roles})"]
    table = "\n".join(lines)
    print(table)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_ingest_bombs.md").write_text(table + "\n")


def finish(records: Records, uploaded: dict[str, float], *, timeout: float) -> dict[str, tuple[Job, float]]:
    """Poll until every job is done or failed; each with its seconds from upload to that state."""
    ended: dict[str, tuple[Job, float]] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(uploaded):
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs {sorted(set(uploaded) - set(ended))} unfinished after {timeout:.0f} s")
        for job_id, at in uploaded.items():
            if job_id not in ended:
                job = records.get_job(job_id)
                if job.state in (JobState.DONE, JobState.FAILED):
                    ended[job_id] = (job, time.monotonic() - at)
        time.sleep(0.05)
    return ended


if __name__ == "__main__":
    main()
