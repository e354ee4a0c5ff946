"""Settings of the retrieval stage (environment prefix ``RETRIEVAL_``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # Embedder. ``kind`` picks the backend; ``model`` is a local folder or a hub id
    # (empty: the backend's default, e.g. the bundled all-MiniLM-L6-v2 for ``minilm``).
    embedder: str = "minilm"
    embedder_model: str = ""
    embedder_device: str = "cpu"
    embedder_max_tokens: int = 0  # 0: the model's own maximum
    embedder_dimension: int = 0  # 0: the model's full dimension (Qwen3 MRL prefix otherwise)
    embedder_batch_size: int = 32
    query_instruction: str = "Given a web search query, retrieve relevant passages that answer the query"
