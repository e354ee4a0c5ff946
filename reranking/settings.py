"""Settings of the rerank stage (environment prefix ``RERANK_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.precision import check_precision
from engine.prompts import QWEN3_RERANKER_INSTRUCTION


class RerankSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANK_", extra="ignore")

    # none: stage-1 order, reported as such. cross-encoder: sentence-transformers CrossEncoder.
    # maxsim: ColBERT MaxSim over a sentence-transformers encoder's token vectors (default: the bundled
    # MiniLM; RERANK_MODEL another folder), no weights of its own (reranking/backends/maxsim.py).
    # qwen3: Qwen3-Reranker (causal LM, P("yes")): on a "cuda" device served by the inference engine
    # (engine/, through reranking/backends/qwen3_engine.py), else through transformers; qwen3-engine /
    # qwen3-transformers force one.
    # remote: another Sieve's /v1/rerank over HTTP.
    backend: str = "none"
    model: str = ""
    device: str = "cpu"
    max_tokens: int = 0  # 0: the backend's default budget per (query, document) pair
    batch_size: int = 16
    # The inference engine's products: bf16, or fp8 (e4m3, Hopper/Ada GPUs): kept only if warm-up finds it
    # agrees with bf16 on a probe batch (engine/precision.py), else bf16 with the reason in the log and /info.
    precision: str = "bf16"
    instruction: str = QWEN3_RERANKER_INSTRUCTION
    # The default of /v1/rerank's `long_documents` (Cohere shape): "truncate" cuts each document at
    # max_tokens_per_doc (API_MAX_TOKENS_PER_DOC) as before; "windows" cuts nothing, scores a document over
    # the model's budget by its best overlapping window and says in each result which window won.
    long_documents: Literal["truncate", "windows"] = "truncate"
    url: str = ""  # for backend=remote: one rerank server
    # for backend=remote: several rerank servers, comma-separated (RERANK_URL, when set too, is one more);
    # two or more make a pool that spreads calls by each server's queue depth (reranking/backends/pool.py)
    urls: str = ""
    timeout_s: float = 2.0
    health_period_s: float = 2.0  # the pool asks each server's /ready this often; a server out comes back
    # The shared token of `sieve rerank-server`: the server asks for it as `Authorization: Bearer <token>`
    # (required when it listens on an address other than loopback), the remote backend sends it.
    server_token: str = ""

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        return check_precision(value)

    def server_urls(self) -> list[str]:
        """The rerank servers of backend=remote: ``RERANK_URL`` then ``RERANK_URLS``, without repeats."""
        urls: list[str] = []
        for raw in [self.url, *self.urls.split(",")]:
            url = raw.strip().rstrip("/")
            if url and url not in urls:
                urls.append(url)
        return urls
