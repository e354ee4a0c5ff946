"""``sieve eval`` stopped by SIGTERM or SIGINT stops the Milvus Lite server it started and removes its
temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.tiny_beir import write_tiny_beir

pytestmark = pytest.mark.integration


def _milvus_pids(marker: Path) -> list[int]:
    """Processes whose command line names ``marker`` (the eval's temporary folder lies under it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(marker) in command and "milvus" in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_eval_leaves_no_server_and_no_folder(tmp_path: Path, signum: int) -> None:
    pytest.importorskip("ir_measures")
    folder = write_tiny_beir(tmp_path / "tiny", gzipped=False)
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as fh:  # enough work to be still running
        for i in range(5000):  # when the signal comes, however fast the machine
            fh.write(
                json.dumps({"_id": f"filler-{i}", "title": "", "text": f"filler passage number {i}"}) + "\n"
            )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["RERANK_BACKEND"] = "none"
    command = [sys.executable, "-m", "api.cli", "eval", str(folder), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _milvus_pids(scratch) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        servers = _milvus_pids(scratch)
        assert servers, "the eval never started its Milvus Lite server"
        assert list(scratch.glob("sieve-eval-*")), "no temporary folder"
        time.sleep(1.0)  # let the run get past the server start

        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    outlived = [pid for pid in servers if _alive(pid)]
    for pid in outlived:  # the test's own leftovers, not to leak past a failure
        os.kill(pid, signal.SIGKILL)

    assert code != 0
    assert not outlived, "the Milvus Lite server outlived the eval"
    assert not list(scratch.glob("sieve-eval-*")), "the temporary folder was left behind"
