"""``Records.active_versions``: the version search may serve per document, in one Redis command (a Lua
script over the documents' hashes)."""

from __future__ import annotations

from ingestion import keyspace
from ingestion.records import Records


def test_each_documents_served_version_and_none_for_missing_deleted_or_unserved(records: Records) -> None:
    r = records.client
    r.hset(keyspace.document("t", "served"), mapping={"active": "v2", "latest": "v3"})
    r.hset(keyspace.document("t", "deleted"), mapping={"active": "", "deleted": "1"})
    r.hset(keyspace.document("t", "in-flight"), mapping={"latest": "v1"})  # accepted, not yet served
    r.hset(keyspace.document("other", "elsewhere"), mapping={"active": "v9"})
    asked = ["served", "deleted", "in-flight", "missing", "served", "elsewhere"]
    assert records.active_versions("t", asked) == {"served": "v2"}
    assert records.active_versions("other", ["elsewhere", "served"]) == {"elsewhere": "v9"}
    assert records.active_versions("t", []) == {}


def test_many_documents_in_one_call_each_paired_with_its_own_version(records: Records) -> None:
    ids = [f"d{i}" for i in range(300)]
    for i, document_id in enumerate(ids):
        if i % 3:
            records.client.hset(keyspace.document("t", document_id), "active", f"v{i}")
    assert records.active_versions("t", reversed(ids)) == {d: f"v{i}" for i, d in enumerate(ids) if i % 3}
