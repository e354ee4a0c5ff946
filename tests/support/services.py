"""Start real services for integration tests: a Milvus Lite server, a Milvus 2.3 server.

Each starter is a context manager that yields ``(process, uri)`` once the service answers, and on exit stops
the process group it started (SIGTERM, then SIGKILL), even when the ``with`` body or the start itself fails.
A service that cannot start raises ``ServiceStartError`` with the tail of its log, so a fixture can turn that
into a skip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from retrieval.milvus_store import GRPC_OPTIONS

logger = logging.getLogger(__name__)

# The ports of a Milvus 2.3 standalone besides the proxy and etcd (``milvus-server --help``); every one is set
# so that two servers started by parallel test runs cannot meet on the defaults.
_MILVUS_SERVER_PORTS = (
    "root-coord-port",
    "proxy-internal-port",
    "query-coord-port",
    "query-node-port",
    "index-coord-port",
    "index-node-port",
    "data-coord-port",
    "data-node-port",
)


class ServiceStartError(RuntimeError):
    """A service did not become ready; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def milvus_answers(uri: str, *, timeout: float = 1.0) -> bool:
    """Whether a Milvus (Lite) server at ``uri`` lists its collections."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=timeout, grpc_options=GRPC_OPTIONS)
    except Exception:  # noqa: BLE001 - a readiness probe: any failure means not up (yet)
        return False
    try:
        client.list_collections(timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - a readiness probe: any failure means not up (yet)
        return False
    finally:
        client.close()


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Stop ``proc`` and the process group it leads (started with ``start_new_session=True``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            logger.warning("process %d ignored SIGTERM for %.0f s; killing it", proc.pid, grace)
    # Children (the ``milvus`` binary under ``milvus-server``) may outlive their parent: kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=5)


@contextlib.contextmanager
def start_milvus_lite(
    data_dir: Path, *, port: int | None = None, timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``milvus-lite server`` on 127.0.0.1 over ``data_dir`` (as ``sieve up`` starts it: through
    ``retrieval.milvus_lite_server``); yields ``(process, uri)``.

    The port is a free one unless given (a restart test reuses it). One server per data directory: Milvus Lite
    locks it.
    """
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.with_name(data_dir.name + ".log")
    port = port or free_port()
    command = [sys.executable, "-m", "retrieval.milvus_lite_server", "server", "--data-dir", str(data_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with _started(command, log_path, f"http://127.0.0.1:{port}", timeout=timeout) as started:
        yield started


@contextlib.contextmanager
def start_milvus_server(
    data_dir: Path, *, timeout: float = 90.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Milvus 2.3 standalone from the ``milvus`` PyPI package over ``data_dir``; yields ``(process, uri)``.

    Takes about 12 s and 400 MB. Every port is a free one: the embedded etcd ignores ``--etcd-port`` for its
    own listeners (it would take 2379 and 2380), so it gets a config file through ``ETCD_CONFIG_PATH``, an
    environment override Milvus reads for ``etcd.config.path``. The wrapper finds a metrics port itself.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port, peer_port = free_port(), free_port()
    etcd_config = data_dir.with_name(data_dir.name + ".etcd.yaml")
    etcd_config.write_text(
        "name: default\n"
        f"listen-client-urls: http://127.0.0.1:{client_port}\n"
        f"advertise-client-urls: http://127.0.0.1:{client_port}\n"
        f"listen-peer-urls: http://127.0.0.1:{peer_port}\n"
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer_port}\n"
        f"initial-cluster: default=http://127.0.0.1:{peer_port}\n"
    )
    port = free_port()
    command = [sys.executable, "-c", "from milvus import main; main()", "--data", str(data_dir)]
    command += ["--proxy-port", str(port), "--etcd-port", str(client_port)]
    for option in _MILVUS_SERVER_PORTS:
        command += [f"--{option}", str(free_port())]
    log_path = data_dir.with_name(data_dir.name + ".log")
    uri = f"http://127.0.0.1:{port}"
    # The proxy answers before the other nodes are up; the wrapper prints its banner once /healthz says OK.
    with _started(
        command,
        log_path,
        uri,
        timeout=timeout,
        ready_marker="Ctrl+C to exit",
        env={"ETCD_CONFIG_PATH": str(etcd_config)},
    ) as started:
        yield started


@contextlib.contextmanager
def _started(
    command: list[str],
    log_path: Path,
    uri: str,
    *,
    timeout: float,
    ready_marker: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    try:
        _wait_ready(proc, uri, log_path, timeout=timeout, ready_marker=ready_marker)
        yield proc, uri
    finally:
        stop_process(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], uri: str, log_path: Path, *, timeout: float, ready_marker: str | None
) -> None:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(f"the server for {uri} exited with {proc.returncode}:\n{_tail(log_path)}")
        log = log_path.read_text(errors="replace") if ready_marker else ""
        if "Milvus server already stopped" in log or "server started timeout" in log:
            raise ServiceStartError(f"Milvus server did not start:\n{_tail(log_path)}")
        if (ready_marker is None or ready_marker in log) and milvus_answers(uri):
            logger.info("%s ready in %.1f s", uri, time.monotonic() - started)
            return
        time.sleep(0.2)
    raise ServiceStartError(f"no answer from {uri} within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
