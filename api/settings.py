"""Settings of the API (environment prefix ``API_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    # API key -> tenant id, as JSON in API_KEYS='{"key1": "tenant-a"}'. No key configured: every call is 401.
    keys: dict[str, str] = Field(default_factory=dict)
    max_request_bytes: int = 200 * 1024 * 1024
    default_top_k: int = 5
    default_candidates: int = 50
    max_candidates: int = 500
    max_query_chars: int = 4000
    # The version of a document served while a newer one is being ingested can leave a few stale chunks
    # in the index for a moment; stage 1 fetches this many extra candidates so filtering them out still
    # leaves ``candidates`` results.
    stale_slack: int = 20
