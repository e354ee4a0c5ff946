"""The embedded stack's state file: where ``sieve up`` says what it runs, for the CLI and for ``/ready``.

``sieve up`` (``api.cli.stack``) writes ``<home>/stack.json`` whenever one of its processes starts, exits or
is restarted, and passes the file's path to its children as ``SIEVE_STACK_STATE``; the API reads it to report
the stack's processes in ``/ready`` (the API never imports the CLI). The file holds no secret, only where the
keys are::

    {"version": 1, "home": "...", "pid": 123, "started_at": 1.7e9, "stopped_at": null,
     "api_url": "http://127.0.0.1:8000", "host": "127.0.0.1",
     "ports": {"api": 8000, "redis": 6390, "milvus": 19540},
     "files": {"api_key": ".../api_key", "admin_key": ".../admin_key", "redis_password": ".../redis_password",
               "logs": ".../logs"},
     "children": [{"name": "worker", "pid": 456, "state": "running", "restarts": 1, "last_exit": -9, ...}]}

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a reader never sees half a
file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_FILE = "stack.json"
STATE_ENV = "SIEVE_STACK_STATE"  # the state file's path, in the environment of the stack's children
VERSION = 1
# What /ready shows of each child: enough to see a restart loop without reading logs.
READY_FIELDS = ("name", "pid", "state", "restarts", "last_exit", "restart_at")


def read_state(path: Path) -> dict[str, Any] | None:
    """The state in ``path``; None when there is none or it cannot be read (a reader never fails on it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stack-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": VERSION, **state}, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ready_report(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """For ``/ready``: the stack's processes when this API runs under ``sieve up``, else None."""
    path = (os.environ if env is None else env).get(STATE_ENV)
    if not path:
        return None
    state = read_state(Path(path))
    if state is None:
        return {"children": [], "note": f"state file {path} unreadable"}
    children = [{k: c.get(k) for k in READY_FIELDS} for c in state.get("children", [])]
    return {"supervisor_pid": state.get("pid"), "children": children}
