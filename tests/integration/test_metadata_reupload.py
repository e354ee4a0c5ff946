"""On the real embedded stack: uploading identical bytes again with new metadata relabels the document's
chunks (a filter on the new value finds it, the old value no longer matches), and bad ids and metadata are
a 422 at upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli.client import SieveClient, SieveClientError

pytestmark = pytest.mark.integration

TEXT = (
    "Lichens are partnerships between a fungus and an alga or a cyanobacterium; they grow on bare rock and "
    "tree bark, and some species survive decades of drought by drying out completely."
)
QUERY = "what are lichens made of"


def hits(client: SieveClient, **filters: str) -> set[str]:
    result = client.search(QUERY, top_k=5, filters={"document_id": "lichens.txt", **filters}, mode="dense")
    return {hit["document_id"] for hit in result["hits"]}


def test_new_metadata_on_identical_bytes_relabels_the_chunks(client_a: SieveClient, tmp_path: Path) -> None:
    path = tmp_path / "lichens.txt"
    path.write_text(TEXT)
    first = client_a.upload([path], metadata={"shelf": "biology-a"})
    assert [j["state"] for j in client_a.wait([j["job_id"] for j in first["jobs"]], timeout=180)] == ["done"]
    assert hits(client_a, shelf="biology-a") == {"lichens.txt"}

    second = client_a.upload([path], metadata={"shelf": "biology-b"})
    assert second["jobs"][0]["state"] == "queued"  # a new version, not "unchanged"
    assert [j["state"] for j in client_a.wait([j["job_id"] for j in second["jobs"]], timeout=180)] == ["done"]
    assert hits(client_a, shelf="biology-b") == {"lichens.txt"}
    assert hits(client_a, shelf="biology-a") == set()
    assert client_a.document("lichens.txt")["metadata"] == {"shelf": "biology-b"}


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"document_id": "\N{GRINNING FACE}" * 256}, "document_id"),
        ({"metadata": '{"score": NaN}'}, "metadata"),
        ({"metadata": '{"score": 1e400}'}, "metadata"),
        ({"metadata": "[" * 50_000 + "]" * 50_000}, "metadata"),
    ],
)
def test_ids_and_metadata_the_store_cannot_keep_are_a_422(
    client_a: SieveClient, form: dict[str, str], field: str
) -> None:
    response = client_a._http.post("/v1/documents", files=[("files", ("x.txt", TEXT.encode()))], data=form)
    assert response.status_code == 422, response.text
    assert json.loads(response.text)["error"]["message"].startswith(field)
    with pytest.raises(SieveClientError):
        client_a.document("x.txt")
