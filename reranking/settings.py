"""Settings of the rerank stage (environment prefix ``RERANK_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.prompts import QWEN3_RERANKER_INSTRUCTION


class RerankSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANK_", extra="ignore")

    # none: stage-1 order, reported as such. cross-encoder: sentence-transformers CrossEncoder.
    # qwen3: Qwen3-Reranker (causal LM, P("yes")): on a "cuda" device served by the inference engine
    # (engine/, through reranking/backends/qwen3_engine.py), else through transformers; qwen3-engine /
    # qwen3-transformers force one.
    # remote: another Sieve's /v1/rerank over HTTP.
    backend: str = "none"
    model: str = ""
    device: str = "cpu"
    max_tokens: int = 0  # 0: the backend's default budget per (query, document) pair
    batch_size: int = 16
    instruction: str = QWEN3_RERANKER_INSTRUCTION
    url: str = ""  # for backend=remote
    timeout_s: float = 2.0
    # The shared token of `sieve rerank-server`: the server asks for it as `Authorization: Bearer <token>`
    # (required when it listens on an address other than loopback), the remote backend sends it.
    server_token: str = ""
