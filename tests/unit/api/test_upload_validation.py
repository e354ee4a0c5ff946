"""``POST /v1/documents`` refuses, with a 422 naming the field, what the worker could never index: a
``document_id`` past the store's column in UTF-8 bytes, metadata with NaN / Infinity / 1e400, and metadata
nested 50,000 levels deep (a 500 RecursionError before). Nothing is recorded or sent for a refused upload."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.apikit import T1, Harness, running

TEXT = b"Otters hold hands while they sleep so that they do not drift apart."


@pytest.fixture
def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running(tmp_path) as h:
        yield h


def post(h: Harness, **form: str) -> tuple[int, str]:
    files = [("files", ("otters.txt", TEXT))]
    r = h.client.post("/v1/documents", files=files, data=form, headers=T1)
    return r.status_code, r.json()["error"]["message"] if r.status_code >= 400 else ""


def test_a_document_id_past_the_store_column_is_a_422_naming_it(harness: Harness) -> None:
    status, message = post(harness, document_id="\N{GRINNING FACE}" * 256)
    assert status == 422 and message.startswith("document_id is 1024 bytes in UTF-8; the limit is 512")
    assert harness.res.records.list_documents("t1") == []
    assert post(harness, document_id="\N{GRINNING FACE}" * 128)[0] == 202


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_metadata_numbers_that_are_not_finite_are_a_422_naming_the_field(
    harness: Harness, value: str
) -> None:
    status, message = post(harness, metadata='{"score": ' + value + "}")
    assert status == 422 and message.startswith("metadata") and "finite" in message
    assert harness.res.uploads.sender.sent == []  # type: ignore[attr-defined]


def test_deeply_nested_metadata_is_a_422_not_a_500(harness: Harness) -> None:
    status, message = post(harness, metadata='{"a": ' * 50_000 + "1" + "}" * 50_000)
    assert status == 422 and message.startswith("metadata is"), message
    status, message = post(harness, metadata='{"a": ' * 40 + "1" + "}" * 40)
    assert status == 422 and "metadata nests 40 levels deep; the limit is 32" in message


def test_good_metadata_is_accepted(harness: Harness) -> None:
    assert post(harness, metadata='{"team": "otters", "score": 0.5}')[0] == 202
