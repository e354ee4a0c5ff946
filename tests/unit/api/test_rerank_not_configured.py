"""Issue 13 item 7: with no reranker, every rerank route answers a permanent 503 (no ``Retry-After``) whose
text names real ``RERANK_BACKEND`` values and says how to turn stage 2 on."""

from __future__ import annotations

import re

import pytest

from ingestion.settings import IngestSettings
from reranking.backends import RERANKERS, STAGE2_OPTIONS
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH

ROUTES = ["/v1/rerank", "/v2/rerank", "/rerank"]


@pytest.mark.parametrize("route", ROUTES)
def test_no_reranker_is_a_permanent_503_naming_real_backends(
    ingest_settings: IngestSettings, route: str
) -> None:
    with harness.client(ingest_settings, None) as (client, _):  # RERANK_BACKEND=none
        r = client.post(route, json={"query": "x", "documents": ["d"]}, headers=AUTH)
    assert r.status_code == 503
    assert "Retry-After" not in r.headers
    message = r.json()["error"]["message"]
    named = set(re.findall(r"RERANK_BACKEND=([a-z0-9-]+)", message))
    assert named >= {"qwen3-engine", "cross-encoder", "remote"}
    assert named <= set(RERANKERS), named
    assert "stage 1 only" in message and "RERANK_MODEL" in message and "RERANK_URL" in message


def test_every_stage2_option_is_a_real_backend() -> None:
    assert set(STAGE2_OPTIONS) <= set(RERANKERS)
