"""A document id or metadata the store could not keep is refused at the door, naming the field."""

from __future__ import annotations

import math

import pytest

from ingestion.records import JobState
from ingestion.uploads import Uploads
from ingestion.validation import (
    DOCUMENT_ID_MAX_BYTES,
    check_metadata,
    parse_metadata,
    validate_document_id,
)
from retrieval.milvus_store import _BYTE_LIMITS

LIMITS = {"max_bytes": 64 * 1024, "max_depth": 32}


def test_the_document_id_byte_limit_is_the_milvus_columns() -> None:
    assert _BYTE_LIMITS["doc_id"] == DOCUMENT_ID_MAX_BYTES


def test_a_document_id_past_the_column_in_utf8_bytes_is_refused() -> None:
    emoji = "\N{GRINNING FACE}"  # 4 bytes in UTF-8
    with pytest.raises(ValueError, match=r"document_id is 1024 bytes in UTF-8; the limit is 512"):
        validate_document_id(emoji * 256)  # 256 characters: within the character limit
    assert validate_document_id(emoji * 128) == emoji * 128  # 512 bytes: fits
    with pytest.raises(ValueError, match="document_id must be 1-256 printable characters"):
        validate_document_id("a" * 257)
    with pytest.raises(ValueError, match="document_id"):
        validate_document_id("tab\there")


@pytest.mark.parametrize("raw", ['{"score": NaN}', '{"score": Infinity}', '{"s": -Infinity}', '{"s": 1e400}'])
def test_metadata_with_numbers_that_are_not_finite_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^metadata .*finite"):
        parse_metadata(raw, **LIMITS)


def test_deeply_nested_metadata_is_refused_without_recursing() -> None:
    deep = '{"a": ' * 50_000 + "1" + "}" * 50_000
    with pytest.raises(ValueError, match=r"^metadata is \d+ bytes; the limit is 65536"):
        parse_metadata(deep, **LIMITS)
    deep = "[" * 50_000 + "]" * 50_000  # 100 kB: within a raised size limit, still too deep
    with pytest.raises(
        ValueError, match=r"metadata nests 50001 levels deep; the limit is 32 \(INGEST_MAX_META"
    ):
        parse_metadata('{"a": ' + deep + "}", max_bytes=10**6, max_depth=32)
    brackets_in_strings = '{"a": "' + "[{" * 100 + '\\"]"}'
    assert parse_metadata(brackets_in_strings, **LIMITS) == {"a": "[{" * 100 + '"]'}


def test_good_metadata_parses_and_bad_json_names_the_field() -> None:
    assert parse_metadata('{"team": "a", "n": 3, "tags": ["x"], "w": 0.5, "ok": null}', **LIMITS)["n"] == 3
    assert parse_metadata(None, **LIMITS) == {} and parse_metadata("", **LIMITS) == {}
    for raw, message in (("[1]", "metadata must be a JSON object"), ("{", "metadata is not valid JSON")):
        with pytest.raises(ValueError, match=message):
            parse_metadata(raw, **LIMITS)
    with pytest.raises(ValueError, match="^metadata: "):
        parse_metadata('{"n": ' + "9" * 5000 + "}", **LIMITS)  # past Python's integer-digits limit


def test_metadata_given_as_a_dict_is_checked_the_same_way() -> None:
    with pytest.raises(ValueError, match=r'metadata\["a"\]\[1\] is nan; numbers in metadata must be finite'):
        check_metadata({"a": [1, math.nan]}, **LIMITS)
    with pytest.raises(ValueError, match="64-bit"):
        check_metadata({"big": 2**70}, **LIMITS)
    with pytest.raises(ValueError, match="is a set"):
        check_metadata({"s": {1}}, **LIMITS)
    nested: dict[str, object] = {}
    inner = nested
    for _ in range(40):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    with pytest.raises(ValueError, match="INGEST_MAX_METADATA_DEPTH"):
        check_metadata(nested, **LIMITS)


def test_uploads_refuse_bad_metadata_and_ids_before_recording_anything(uploads: Uploads) -> None:
    with pytest.raises(ValueError, match="finite"):
        uploads.accept("t", "a.txt", b"some words here", document_id=None, metadata={"x": math.inf})
    with pytest.raises(ValueError, match="document_id"):
        uploads.accept("t", "a.txt", b"some words here", document_id="\N{GRINNING FACE}" * 256, metadata={})
    assert uploads.records.list_documents("t") == [] and uploads.sender.sent == []  # type: ignore[attr-defined]
    job = uploads.accept("t", "a.txt", b"some words here", document_id=None, metadata={"x": 1.5})
    assert job.state is JobState.QUEUED and job.metadata == {"x": 1.5}
