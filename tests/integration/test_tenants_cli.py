"""Issue 13, Done when: a fresh embedded stack driven through the CLI from another folder: a second tenant's
key is created, a folder with same-named files in subfolders is ingested as that tenant, both tenants search
(isolation holds), the key is revoked (401 after), `sieve down` stops the stack, and no output holds a
traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.stack import free_port, stop_recorded
from api.stack_state import STATE_FILE, read_state

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stack supervisor is Linux's"),
]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RETRIEVAL_COLLECTION": "tenants_cli_chunks",
        "COLUMNS": "200",
    }
    for name in ("SIEVE_HOME", "SIEVE_URL", "SIEVE_API_KEY", "INGEST_REDIS_URL", "API_ADMIN_KEY", "API_KEYS"):
        env.pop(name, None)
    yield home, env
    stop_recorded(home, grace=10)  # whatever a failed test left running


def test_second_tenant_through_the_cli(tmp_path: Path, setting: tuple[Path, dict[str, str]]) -> None:
    home, env = setting
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    outputs: list[str] = []

    def sieve(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "--home", str(home), *args],
            cwd=there,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs.append(done.stdout + done.stderr)
        if ok:
            assert done.returncode == 0, f"sieve {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    ports = ["--port", str(free_port()), "--redis-port", str(free_port()), "--milvus-port", str(free_port())]
    log = tmp_path / "up.log"
    with open(log, "ab") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "up", "--no-sample", "--home", str(home), *ports],
            cwd=here,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while True:
        assert up.poll() is None, f"sieve up exited:\n{log.read_text()[-3000:]}"
        state: dict[str, Any] | None = read_state(home / STATE_FILE)
        try:
            if state and httpx.get(f"{state['api_url']}/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the stack never got ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)

    key = sieve("keys", "create", "--tenant", "second").stdout.strip().splitlines()[-1]
    assert key.startswith("sk-")

    docs = there / "docs"
    for sub, text in (
        ("a", "Honey bees dance to show where the flowers grow."),
        ("b", "Tides follow the moon."),
    ):
        (docs / sub).mkdir(parents=True)
        (docs / sub / "README.md").write_text(f"# {sub}\n\n{text}\n")
    ingested = sieve("ingest", str(docs), "--key", key)
    assert "2 document(s) indexed" in ingested.stdout

    mine = sieve("search", "where do bees dance", "--key", key, "-k", "2").stdout
    assert "a/README.md" in mine and "b/README.md" in mine
    other = sieve("search", "where do bees dance", "-k", "2").stdout  # the stack's own tenant
    assert "README.md" not in other

    assert "second" in sieve("keys", "list").stdout
    sieve("keys", "revoke", key)
    refused = sieve("search", "bees", "--key", key, ok=False)
    assert refused.returncode == 1 and "401" in refused.stderr

    sieve("down")
    up.wait(timeout=60)
    outputs.append(log.read_text())
    assert not [o for o in outputs if "Traceback" in o], json.dumps(outputs)[-3000:]
