"""Which index serves, and the rebuild of a new one beside it (Redis records shared by the API and workers).

An index is a vector-store collection plus the embedder that built it. Without a record, the index of the
settings serves (``RETRIEVAL_COLLECTION`` built by ``RETRIEVAL_EMBEDDER``/``_MODEL``). A new embedder gets a
new collection, named from the base collection and a hash of the embedder (kind, model, revision), built
beside the serving one by ``ingestion.reindex``; the switch is one Redis transaction.

Keys (under ``sieve:index:``, named in ``ingestion.keyspace``):
- ``serving``     hash (``IndexSpec``): the index search and ingestion use; absent: the settings' one
- ``previous``    hash (``IndexSpec``): the index served before the last switch (kept until dropped)
- ``build``       hash (``BuildStatus``): the rebuild in progress, or the last one
- ``generation``  counter bumped by every switch: a process compares it to notice one cheaply
"""

from __future__ import annotations

import hashlib
import time
import uuid
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field

from ingestion.errors import IngestError
from ingestion.keyspace import INDEX_BUILD, INDEX_GENERATION, INDEX_PREVIOUS, INDEX_SERVING, redis_call
from ingestion.records import Fields
from retrieval.lexical import ANALYSIS_VERSION
from retrieval.settings import RetrievalSettings


class ReindexBusyError(IngestError):
    """A rebuild is already running (or the one asked for would rebuild the serving index)."""


class IndexSpec(BaseModel):
    collection: str
    embedder: str  # the kind (RETRIEVAL_EMBEDDER)
    embedder_model: str = ""  # folder or hub id (RETRIEVAL_EMBEDDER_MODEL); empty: the kind's default
    revision: str = ""  # sieve-model.json's revision or the hub commit, when known
    embedder_name: str = ""  # the name the embedder recorded in the collection
    switched_at: float = 0.0

    def settings(self, base: RetrievalSettings) -> RetrievalSettings:
        """``base`` pointed at this index (its collection and embedder)."""
        update = {
            "collection": self.collection,
            "embedder": self.embedder,
            "embedder_model": self.embedder_model,
        }
        return base.model_copy(update=update)

    def same_index(self, other: IndexSpec) -> bool:
        return (self.collection, self.embedder, self.embedder_model) == (
            other.collection,
            other.embedder,
            other.embedder_model,
        )


class BuildState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"  # re-embedding every active document
    CATCHING_UP = "catching_up"  # re-indexing what changed while it ran
    SWITCHED = "switched"
    FAILED = "failed"


RUNNING = (BuildState.QUEUED, BuildState.BUILDING, BuildState.CATCHING_UP)


class BuildStatus(IndexSpec):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    state: BuildState = BuildState.QUEUED
    documents_total: int = 0
    documents_done: int = 0
    documents_failed: int = 0
    chunks: int = 0
    passes: int = 0
    error: str = ""
    started_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    def spec(self) -> IndexSpec:
        return IndexSpec.model_validate(self.model_dump(include=set(IndexSpec.model_fields)))


def settings_spec(settings: RetrievalSettings, revision: str = "") -> IndexSpec:
    """The index of the settings (what serves while no switch was ever made)."""
    return IndexSpec(
        collection=settings.collection,
        embedder=settings.embedder,
        embedder_model=settings.embedder_model,
        revision=revision,
    )


def collection_name(base: str, embedder: str, embedder_model: str, revision: str) -> str:
    """The collection of a rebuilt index: the base name and a hash of what built it (a Milvus-safe name):
    the embedder and the lexical analysis, so that a rebuild with the serving embedder moves an index made
    by an older analysis to the current one."""
    built_by = f"{embedder}\x1f{embedder_model}\x1f{revision}\x1flexical-{ANALYSIS_VERSION}"
    digest = hashlib.sha256(built_by.encode()).hexdigest()[:12]
    return f"{base[:200]}_{digest}"


def _mapping(model: BaseModel) -> Fields:
    return {k: (v.value if isinstance(v, StrEnum) else str(v)) for k, v in model.model_dump().items()}


class Indexes:
    """The serving pointer and the rebuild record, over the registry's Redis connection."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def generation(self) -> int:
        return int(redis_call(lambda: self._r.get(INDEX_GENERATION)) or 0)

    def serving(self, default: IndexSpec) -> IndexSpec:
        data = redis_call(lambda: self._r.hgetall(INDEX_SERVING))
        return IndexSpec.model_validate(data) if data else default

    def previous(self) -> IndexSpec | None:
        data = redis_call(lambda: self._r.hgetall(INDEX_PREVIOUS))
        return IndexSpec.model_validate(data) if data else None

    def build(self) -> BuildStatus | None:
        data = redis_call(lambda: self._r.hgetall(INDEX_BUILD))
        return BuildStatus.model_validate(data) if data else None

    def start_build(self, build: BuildStatus) -> BuildStatus:
        """Record a new rebuild; ``ReindexBusyError`` while another one runs."""
        key = INDEX_BUILD

        def txn(pipe: redis.client.Pipeline) -> None:
            state = pipe.hget(key, "state")
            if state in RUNNING:
                raise ReindexBusyError(
                    f"a rebuild is already {state}: wait for it to end (GET /v1/admin/reindex)"
                )
            pipe.multi()
            pipe.delete(key)
            pipe.hset(key, mapping=_mapping(build))

        redis_call(lambda: self._r.transaction(txn, key))
        return build

    def update_build(self, build_id: str, **fields: Any) -> None:
        """Update the rebuild ``build_id`` (a stale task's updates of an older rebuild are dropped)."""
        key = INDEX_BUILD
        fields["updated_at"] = time.time()
        mapping: Fields = {k: (v.value if isinstance(v, StrEnum) else str(v)) for k, v in fields.items()}

        def txn(pipe: redis.client.Pipeline) -> None:
            current = pipe.hget(key, "id")
            pipe.multi()
            if current == build_id:
                pipe.hset(key, mapping=mapping)

        redis_call(lambda: self._r.transaction(txn, key))

    def switch(self, spec: IndexSpec, *, default: IndexSpec) -> int:
        """Serve ``spec`` from now on; the index that served becomes ``previous``. Returns the generation."""
        current = self.serving(default)
        spec = spec.model_copy(update={"switched_at": time.time()})
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(INDEX_PREVIOUS, INDEX_SERVING)
        pipe.hset(INDEX_PREVIOUS, mapping=_mapping(current))
        pipe.hset(INDEX_SERVING, mapping=_mapping(spec))
        pipe.incr(INDEX_GENERATION)
        return int(redis_call(pipe.execute)[-1])

    def forget_previous(self) -> None:
        redis_call(lambda: self._r.delete(INDEX_PREVIOUS))
