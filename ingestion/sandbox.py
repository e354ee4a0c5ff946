"""Parse a stored file in a child process with wall-time, CPU-time and address-space limits.

``parse_file`` starts ``python -m ingestion.sandbox`` (a fresh interpreter per parse, so nothing a parse
leaves behind outlives it), which sets its own ``RLIMIT_AS`` and ``RLIMIT_CPU``, arms an alarm as a last
resort, parses with ``ingestion.parsers.parse`` and writes the sections as JSON to its stdout. The parent
waits at most the wall time, then kills it. A parse that passes a limit raises ``ParseLimitError`` naming
the limit and its setting, e.g. "parse exceeded 30 s wall time (INGEST_PARSE_TIMEOUT_S)"; the parser's own
errors (``ParseError``, ``EmptyDocumentError``, ``UnsupportedFormatError``) come back as themselves.

A subprocess rather than ``multiprocessing``: Celery's prefork workers are daemonic processes, which
``multiprocessing`` does not let have children. Starting the child costs 0.1-0.3 s (the parser's imports).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

from ingestion.errors import (
    EmptyDocumentError,
    IngestError,
    ParseError,
    ParseLimitError,
    UnsupportedFormatError,
)
from ingestion.parsers import Heading, ParseLimits, Section, parse
from ingestion.settings import IngestSettings

logger = logging.getLogger(__name__)

_ERRORS: dict[str, type[IngestError]] = {
    "ParseError": ParseError,
    "ParseLimitError": ParseLimitError,
    "EmptyDocumentError": EmptyDocumentError,
    "UnsupportedFormatError": UnsupportedFormatError,
}
_KILL_GRACE_S = 5  # the child's own alarm fires this long after the parent's wall-time limit


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one parse's child process."""

    wall_s: float = 30.0
    cpu_s: int = 30
    memory_bytes: int = 1024 * 2**20

    def wall_reason(self) -> str:
        return f"parse exceeded {self.wall_s:g} s wall time (INGEST_PARSE_TIMEOUT_S)"

    def cpu_reason(self) -> str:
        return f"parse exceeded {self.cpu_s} s CPU time (INGEST_PARSE_CPU_S)"

    def memory_reason(self) -> str:
        return f"parse exceeded {self.memory_bytes // 2**20} MiB of memory (INGEST_PARSE_MEMORY_MB)"


def limits_from(settings: IngestSettings) -> tuple[ParseLimits, SandboxLimits | None]:
    """The parse limits of ``settings``, and the sandbox's (None when ``INGEST_PARSE_SANDBOX`` is off)."""
    parse_limits = ParseLimits(
        docx_max_unpacked_bytes=settings.docx_max_unpacked_mb * 2**20,
        docx_max_members=settings.docx_max_members,
        markup_max_depth=settings.markup_max_depth,
    )
    if not settings.parse_sandbox:
        return parse_limits, None
    sandbox = SandboxLimits(
        wall_s=settings.parse_timeout_s,
        cpu_s=settings.parse_cpu_s,
        memory_bytes=settings.parse_memory_mb * 2**20,
    )
    return parse_limits, sandbox


def parse_file(
    path: str | Path, filename: str, limits: ParseLimits, sandbox: SandboxLimits | None
) -> list[Section]:
    """The sections of the file at ``path`` (named ``filename``), parsed in a child process under
    ``sandbox`` (in this process when None)."""
    if sandbox is None:
        return parse(Path(path).read_bytes(), filename, limits)
    request = {"path": str(path), "filename": filename, "limits": asdict(limits), "sandbox": asdict(sandbox)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestion.sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # killed as a group; a Ctrl-C meant for the worker is not its business
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(json.dumps(request).encode(), timeout=sandbox.wall_s)
    except subprocess.TimeoutExpired:
        raise ParseLimitError(f"{_name(filename)}: {sandbox.wall_reason()}") from None
    finally:  # also when the task's own time limit interrupts the wait
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pipe in (
            proc.stdin,
            proc.stdout,
            proc.stderr,
        ):  # communicate() leaves them open when it times out
            if pipe is not None:
                pipe.close()
    return _result(proc.returncode, out, err, filename, sandbox)


def _result(code: int, out: bytes, err: bytes, filename: str, sandbox: SandboxLimits) -> list[Section]:
    name = _name(filename)
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and not out:
        # SIGXCPU at the soft CPU limit; SIGKILL at the hard one (a second later) or from the kernel
        reason = sandbox.cpu_reason() if code == -signal.SIGXCPU else f"{sandbox.cpu_reason()} or was killed"
        raise ParseLimitError(f"{name}: {reason}")
    if code == -signal.SIGALRM:
        raise ParseLimitError(f"{name}: {sandbox.wall_reason()}")
    try:
        reply: dict[str, Any] = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        logger.warning("parse of %s ended with code %s: %s", name, code, " | ".join(tail))
        if code < 0:
            raise ParseLimitError(
                f"{name}: the parse process died of signal {-code}, likely past its memory limit "
                f"({sandbox.memory_bytes // 2**20} MiB, INGEST_PARSE_MEMORY_MB)"
            ) from None
        raise ParseError(f"{name} could not be parsed (the parse process exited with code {code})") from None
    if "error" in reply:
        kind, message = reply["error"]
        if kind == "MemoryError":
            raise ParseLimitError(f"{name}: {sandbox.memory_reason()}")
        raise _ERRORS.get(kind, ParseError)(message)
    return [
        Section(
            text, page, title, tuple(Heading(offset, level, heading) for offset, level, heading in headings)
        )
        for text, page, title, headings in reply["sections"]
    ]


def _name(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1] or "the file"


def _child() -> int:
    """The child's side: limits first, then parse, then one JSON reply on stdout."""
    import resource

    request = json.loads(sys.stdin.buffer.read())
    sandbox = SandboxLimits(**request["sandbox"])
    resource.setrlimit(resource.RLIMIT_AS, (sandbox.memory_bytes, sandbox.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (sandbox.cpu_s, sandbox.cpu_s + 1))
    signal.alarm(int(sandbox.wall_s) + _KILL_GRACE_S)  # should the parent be gone
    try:
        data = Path(request["path"]).read_bytes()
        sections = parse(data, request["filename"], ParseLimits(**request["limits"]))
        del data
        out = json.dumps(
            {
                "sections": [
                    [s.text, s.page, s.title, [list(astuple(h)) for h in s.headings]] for s in sections
                ]
            }
        ).encode()
    except MemoryError:
        out = json.dumps({"error": ["MemoryError", ""]}).encode()
    except IngestError as exc:
        out = json.dumps({"error": [type(exc).__name__, str(exc)]}).encode()
    except RecursionError:
        reason = f"{_name(request['filename'])} nests too deeply to be parsed"
        out = json.dumps({"error": ["ParseLimitError", reason]}).encode()
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
