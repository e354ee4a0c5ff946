"""A real S3-speaking server for the integration tier: moto's server (``moto[server]``, in the ``dev`` extra)
as a child process on a free port of 127.0.0.1, stopped (its process group) when the ``with`` block ends."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import ServiceStartError, free_port, stop_process

ACCESS_KEY = "sieve-test-key"
SECRET_KEY = "sieve-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    process: subprocess.Popen[bytes]

    def settings(self, bucket: str, **more: Any) -> dict[str, Any]:
        """``IngestSettings`` fields for a blob store on this server."""
        return {
            "blob_store": "s3",
            "s3_bucket": bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            **more,
        }


@contextlib.contextmanager
def start_moto(log_path: Path, *, timeout: float = 60.0) -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServiceStartError(f"moto server exited with {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(endpoint + "/", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServiceStartError(f"no answer from moto at {endpoint} within {timeout:.0f} s")
            time.sleep(0.2)
        yield S3Server(endpoint, proc)
    finally:
        stop_process(proc)
