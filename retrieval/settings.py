"""Settings of the retrieval stage (environment prefix ``RETRIEVAL_``)."""

from __future__ import annotations

from pydantic import ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.precision import check_precision
from engine.prompts import QWEN3_EMBEDDING_INSTRUCTION
from retrieval.fusion import DEFAULT_FUSION, FUSION_METHODS, SEARCH_MODES


class RetrievalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETRIEVAL_", extra="ignore")

    # Vector store. ``http://host:port`` is a Milvus Lite server or a Milvus server;
    # ``memory://`` is the in-process store used by unit tests only.
    milvus_uri: str = "http://127.0.0.1:19540"
    milvus_token: str = ""
    collection: str = "sieve_chunks"
    index_type: str = "HNSW"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 128
    consistency_level: str = "Strong"
    # Full text (bm25 / hybrid search; Milvus Lite and Milvus 2.5+): BM25 k1 and b of new collections. The
    # text is analysed by retrieval.lexical (language detected per chunk and per query), not by a setting.
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    # Where the lexical leg runs on Milvus Lite: "auto" (the embedded SQLite FTS5 index under ``lexical_dir``
    # when it is set: Milvus Lite's own BM25 keeps statistics per segment, see retrieval.lexical_index),
    # "milvus" (Milvus Lite's BM25 all the same). A Milvus 2.5+ server always uses its own BM25.
    lexical_index: str = "auto"
    lexical_dir: str = ""
    # The embedded index scores bm25 on postings each process holds in memory (kept current from the file's
    # change log; FTS5 answers a tenant's searches while they build): a few ms at 100k chunks instead of
    # FTS5's 30-100 ms. False: FTS5 only.
    lexical_resident: bool = True

    # Stage 1 when a search request does not say: dense, bm25 or hybrid (Milvus BM25 + dense, fused).
    # Where the server or collection has no full-text index, a default of hybrid falls back to dense.
    search_mode: str = "hybrid"
    fusion: str = DEFAULT_FUSION  # zscore, rrf or weighted: retrieval.fusion

    # Embedder. ``kind`` picks the backend; ``model`` is a local folder or a hub id
    # (empty: the backend's default, e.g. the bundled all-MiniLM-L6-v2 for ``minilm``).
    embedder: str = "minilm"
    embedder_model: str = ""
    embedder_device: str = "cpu"
    embedder_max_tokens: int = 0  # 0: the model's own maximum
    embedder_dimension: int = 0  # 0: the model's full dimension (Qwen3 MRL prefix otherwise)
    embedder_batch_size: int = 32
    # The inference engine's products (qwen3 on a cuda device): bf16, or fp8 where the GPU has it and warm-up
    # finds it agrees with bf16 (engine/precision.py); else bf16, with the reason in the log and /info.
    embedder_precision: str = "bf16"
    # The languages the embedder reads (retrieval.lexical's en, zh, other; or all): empty means what the
    # backend declares (MiniLM: en; bge-m3, e5, Qwen3: all). Hybrid search drops the dense leg of a query
    # in a language outside this set (retrieval.fusion.plan_legs).
    embedder_languages: str = ""
    query_instruction: str = QWEN3_EMBEDDING_INSTRUCTION

    @field_validator("embedder_precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        return check_precision(value)

    @field_validator("search_mode", "fusion")
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        choices = {"search_mode": SEARCH_MODES, "fusion": FUSION_METHODS}[str(info.field_name)]
        if value not in choices:
            name = f"RETRIEVAL_{str(info.field_name).upper()}"
            raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
        return value
