"""What an upload must satisfy beyond its file: its ``document_id`` and its ``metadata``.

Each check raises ``ValueError`` with a message that names the field (the API answers 422 with it), so that
nothing the worker would refuse later (a permanent error after the upload was accepted) is accepted:

- ``document_id``: 1-256 characters, no control characters, at most ``DOCUMENT_ID_MAX_BYTES`` in UTF-8 (the
  vector store's ``doc_id`` column, ``retrieval.milvus_store``).
- ``metadata``: a JSON object of at most ``INGEST_MAX_METADATA_BYTES``, nested at most
  ``INGEST_MAX_METADATA_DEPTH`` levels, whose numbers are finite (no ``NaN``, ``Infinity``, or ``1e400``,
  which overflows to infinity) and whose integers fit 64 bits: the vector store keeps it as strict JSON with
  every chunk.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DOCUMENT_ID_MAX_CHARS = 256
DOCUMENT_ID_MAX_BYTES = 512  # the doc_id column of the Milvus schema (retrieval/milvus_store.py)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT64 = (-(2**63), 2**63 - 1)


def validate_document_id(document_id: str) -> str:
    """The stripped ``document_id``, or ``ValueError`` naming what is wrong with it."""
    document_id = document_id.strip()
    if not document_id or len(document_id) > DOCUMENT_ID_MAX_CHARS or _CONTROL.search(document_id):
        raise ValueError(f"document_id must be 1-{DOCUMENT_ID_MAX_CHARS} printable characters")
    size = len(document_id.encode("utf-8"))
    if size > DOCUMENT_ID_MAX_BYTES:
        raise ValueError(
            f"document_id is {size} bytes in UTF-8; the limit is {DOCUMENT_ID_MAX_BYTES} "
            "(the vector store's doc_id column)"
        )
    return document_id


def parse_metadata(raw: str | None, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """The metadata form field as a dict ({} when absent), checked as ``check_metadata`` does.

    Size and nesting are checked on the text before it is decoded, so a deeply nested or huge value costs
    one linear pass, never a recursion."""
    if not raw:
        return {}
    size = len(raw.encode("utf-8"))
    if size > max_bytes:
        raise ValueError(f"metadata is {size} bytes; the limit is {max_bytes} (INGEST_MAX_METADATA_BYTES)")
    depth = _text_depth(raw)
    if depth > max_depth:
        raise ValueError(_too_deep(depth, max_depth))
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except ValueError as exc:  # ours name the field; Python's own (an integer of 5,000 digits) do not
        message = str(exc)
        raise ValueError(message if message.startswith("metadata") else f"metadata: {message}") from exc
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    return check_metadata(value, max_bytes=max_bytes, max_depth=max_depth)


def check_metadata(value: dict[str, Any], *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """``value`` if it is a JSON object the store keeps as given (string keys; strings, finite numbers,
    booleans, null, lists and objects), nested at most ``max_depth`` levels and at most ``max_bytes`` as
    JSON; else ``ValueError`` naming the first offending field."""
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    stack: list[tuple[str, Any, int]] = [("metadata", value, 1)]
    while stack:  # iterative: a deep value cannot exhaust the stack before its depth is seen
        path, item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(_too_deep(depth, max_depth, path))
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise ValueError(f"{path} has a key {key!r} that is not a string")
                    stack.append((f"{path}[{json.dumps(key, ensure_ascii=False)}]", child, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path} is {item}; numbers in metadata must be finite")
        elif isinstance(item, int) and not isinstance(item, bool) and not _INT64[0] <= item <= _INT64[1]:
            raise ValueError(f"{path} is outside the 64-bit integer range the store keeps")
        elif not (item is None or isinstance(item, str | int | float | bool)):
            raise ValueError(f"{path} is a {type(item).__name__}, not a JSON value")
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise ValueError(f"metadata is {size} bytes; the limit is {max_bytes} (INGEST_MAX_METADATA_BYTES)")
    return value


def _text_depth(raw: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _too_deep(depth: int, limit: int, path: str = "metadata") -> str:
    return f"{path} nests {depth} levels deep; the limit is {limit} (INGEST_MAX_METADATA_DEPTH)"


def _no_constant(name: str) -> Any:
    raise ValueError(f"metadata holds {name}; numbers in metadata must be finite")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"metadata holds the number {text[:40]}, which overflows; numbers must be finite")
    return number
