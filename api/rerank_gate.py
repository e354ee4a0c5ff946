"""The runtime rerank gate: where its decisions live (Redis, one per tenant) and how search consults them.

``API_RERANK_GATE`` (``ApiSettings.rerank_gate``):

    evaluated  (default) stage 2 runs for a tenant only when its stored ``GateDecision`` says enabled and was
               made for the serving reranker (same name and revision); the final score is then the learned
               fusion of the stage-1 and rerank scores. Otherwise stage 1 only, and the response says why.
    always     stage 2 whenever a reranker is configured, in the reranker's order (no decision needed).
    off        never stage 2.

A decision is taken for one stage-1 mode (``stage1_mode``) and applies to the tenant's searches in any mode.

The same decision carries the stage-1 gate's (``GateDecision.stage1``, ``api.relevance.stage1_gate``), which
applies in every ``API_RERANK_GATE`` mode: a search that names neither ``mode`` nor ``fusion`` runs in the
learned stage-1 configuration when the gate adopted one and it was learned with the serving embedder
(``RerankGate.stage1``); otherwise in ``RETRIEVAL_SEARCH_MODE`` / ``RETRIEVAL_FUSION``.

Keys: ``sieve:gate:{tenant}`` holds the decision as JSON. Storing or clearing a decision also bumps the
tenant's index version (``sieve:index_version:{tenant}``, see ``api.cache``) in the same transaction, so no
cached result computed under the previous decision is served afterwards. Search reads the key once per call
(``RerankGate.read``: one GET; the parsed decision is reused while the stored text is unchanged).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import BaseModel, ValidationError

from api.gate_decision import Fusion, GateDecision, Stage1
from engine.hub import model_revision
from ingestion import keyspace
from reranking import Reranker, RerankSettings

logger = logging.getLogger(__name__)

GateMode = Literal["evaluated", "always", "off"]
NO_DECISION = "no evaluation yet: run `sieve eval --gate` on labelled queries and apply its gate.json"
NO_STAGE1 = "no stage-1 decision: searches that name no mode run RETRIEVAL_SEARCH_MODE"


@dataclass(frozen=True)
class RerankerIdentity:
    """What a decision is bound to: the reranker's name, where its model came from, and its revision."""

    name: str
    model: str | None = None
    revision: str | None = None


def revision_of(ref: str) -> str | None:
    """``engine.hub.model_revision`` (a trained folder's card, a hub snapshot's commit); for another
    local folder a fingerprint of its files (names, sizes, modification times), so that a model retrained in
    place is a new revision; else None."""
    revision = model_revision(ref)
    path = Path(ref) if ref else None
    if revision or path is None or not path.is_dir():
        return revision
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"local:{digest.hexdigest()[:16]}"


def reranker_identity(reranker: Reranker, settings: RerankSettings | None = None) -> RerankerIdentity:
    """The serving (or evaluated) reranker's identity; a backend's own ``revision`` attribute wins."""
    model = None
    if settings is not None:
        model = (",".join(settings.server_urls()) if settings.backend == "remote" else settings.model) or None
    revision = reranker.revision
    if not isinstance(revision, str) or not revision:
        revision = revision_of(model) if model and settings and settings.backend != "remote" else None
    return RerankerIdentity(reranker.name, model, revision)


def applies(decision: GateDecision, identity: RerankerIdentity) -> bool:
    return decision.reranker == identity.name and decision.reranker_revision == identity.revision


class GateStore:
    """``get`` / ``put`` / ``delete`` of a tenant's decision; writes bump the tenant's index version."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._parsed: dict[str, tuple[str, GateDecision | None]] = {}

    @staticmethod
    def key(tenant: str) -> str:
        return keyspace.gate(tenant)

    def get(self, tenant: str) -> GateDecision | None:
        raw = self._r.get(self.key(tenant))
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        cached = self._parsed.get(tenant)
        if cached is not None and cached[0] == text:
            return cached[1]
        try:
            decision: GateDecision | None = GateDecision.model_validate_json(text)
        except ValidationError:
            logger.warning("the rerank gate decision of tenant %s is unreadable; ignored", tenant)
            decision = None
        self._parsed[tenant] = (text, decision)
        return decision

    def put(self, tenant: str, decision: GateDecision) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self.key(tenant), decision.model_dump_json())
        pipe.incr(keyspace.index_version(tenant))  # cached results made under the old decision: gone
        pipe.execute()

    def delete(self, tenant: str) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self.key(tenant))
        pipe.incr(keyspace.index_version(tenant))
        removed, _ = pipe.execute()
        return bool(removed)


class GateInfo(BaseModel):
    """The rerank gate's verdict for this tenant, in a search response and in ``/info``."""

    mode: GateMode
    enabled: bool
    reason: str
    decided_at: datetime | None = None
    dataset: str | None = None
    reranker_revision: str | None = None
    fusion: str | None = None  # the learned fusion's description, when the final score is fused


@dataclass(frozen=True)
class Stored:
    """A tenant's stored decision as one read found it (``unreadable``: Redis could not be read)."""

    decision: GateDecision | None
    unreadable: bool = False


@dataclass(frozen=True)
class Stage1Choice:
    """The stage-1 configuration a default search runs (None: the settings'), and why."""

    config: Stage1 | None
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"learned": self.config is not None, "reason": self.reason} | (
            {"config": self.config.model_dump(), "label": self.config.label} if self.config else {}
        )


@dataclass(frozen=True)
class Verdict:
    run: bool  # call the reranker
    fusion: Fusion | None  # fuse its scores with stage 1 (None: the reranker's order)
    info: GateInfo


class RerankGate:
    """The gate as search sees it: ``verdict(tenant)`` costs one Redis GET in ``evaluated`` mode."""

    def __init__(self, mode: GateMode, store: GateStore | None, identity: RerankerIdentity) -> None:
        self.mode = mode
        self.store = store
        self.identity = identity

    @property
    def label(self) -> str:
        """For cache keys: results differ by gate mode and by the reranker's revision."""
        return f"{self.identity.name}@{self.identity.revision or '-'}|gate={self.mode}"

    def read(self, tenant: str) -> Stored:
        """The tenant's decision: one GET (``unreadable`` when Redis fails; search then runs without it)."""
        try:
            return Stored(self.store.get(tenant) if self.store is not None else None)
        except redis.RedisError as exc:
            logger.warning("could not read the gate decision of %s: %s", tenant, exc)
            return Stored(None, unreadable=True)

    def stage1(self, stored: Stored, embedder: str) -> Stage1Choice:
        """The learned stage-1 configuration for a search that names no mode, where one applies."""
        decision = stored.decision
        if stored.unreadable:
            return Stage1Choice(None, "the stage-1 decision could not be read: RETRIEVAL_SEARCH_MODE")
        if decision is None or decision.stage1 is None:
            return Stage1Choice(None, NO_STAGE1)
        if not decision.stage1.adopted:
            return Stage1Choice(None, f"default kept: {decision.stage1.reason}")
        if decision.embedder != embedder:
            return Stage1Choice(
                None,
                f"the stored stage-1 decision was learned with embedder {decision.embedder}, not the serving "
                f"{embedder}: run `sieve eval --gate` again",
            )
        config = decision.stage1.learned
        when = decision.decided_at.date().isoformat()
        return Stage1Choice(
            config,
            f"stage 1 {config.label}: learned by sieve eval --gate on {when}; {decision.stage1.reason}",
        )

    def verdict(self, tenant: str, stored: Stored | None = None) -> Verdict:
        """Whether stage 2 runs for ``tenant`` (``stored``: the decision ``read`` found, else read here)."""
        if self.mode == "always":
            return Verdict(True, None, GateInfo(mode="always", enabled=True, reason="API_RERANK_GATE=always"))
        if self.mode == "off":
            reason = "rerank stage off for every tenant (API_RERANK_GATE=off)"
            return Verdict(False, None, GateInfo(mode="off", enabled=False, reason=reason))
        stored = stored if stored is not None else self.read(tenant)
        decision = stored.decision
        if stored.unreadable:
            reason = "rerank stage off: the rerank gate's decision could not be read"
            return Verdict(False, None, GateInfo(mode="evaluated", enabled=False, reason=reason))
        if decision is None:
            return Verdict(False, None, GateInfo(mode="evaluated", enabled=False, reason=NO_DECISION))
        info = GateInfo(
            mode="evaluated",
            enabled=decision.enabled,
            reason=decision.reason,
            decided_at=decision.decided_at,
            dataset=decision.dataset,
            reranker_revision=decision.reranker_revision,
        )
        if not applies(decision, self.identity):
            info.enabled = False
            info.reason = (
                f"the stored decision was made for reranker {decision.reranker} (revision "
                f"{decision.reranker_revision or 'unknown'}), not the serving {self.identity.name} (revision "
                f"{self.identity.revision or 'unknown'}): run `sieve eval --gate` again"
            )
            return Verdict(False, None, info)
        if not decision.enabled:
            return Verdict(False, None, info)
        info.fusion = decision.fusion.label
        return Verdict(True, decision.fusion, info)


def gate_summary(gate: RerankGate, tenant: str | None, embedder: str | None = None) -> dict[str, Any]:
    """For ``/info``: the gate's mode, and for a caller with a tenant's API key that tenant's verdict and,
    given the serving ``embedder``'s name, the stage-1 configuration its default searches run."""
    summary: dict[str, Any] = {"mode": gate.mode}
    if tenant is not None:
        stored = gate.read(tenant)
        verdict = gate.verdict(tenant, stored)
        summary.update(tenant=tenant, **verdict.info.model_dump(mode="json", exclude_none=True))
        if embedder is not None:
            summary["stage1"] = gate.stage1(stored, embedder).summary()
    return summary
