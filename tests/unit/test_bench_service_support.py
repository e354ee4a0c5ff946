"""The helpers of tests/benchmarks/bench_service.py: the corpus it writes is the corpus search serves, and the
closed-loop load counts what it claims to count."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion.records import Records
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, RecordingSender
from tests.support.loadgen import Answer, Client, Run, closed_loop, knee_of
from tests.support.search_corpus import Corpus, load, random_vectors

KEY = "bench-support-key-0123456789"


def test_the_generated_corpus_is_deterministic_sized_and_grouped_in_whole_documents() -> None:
    corpus = Corpus(45, words=60, scifact=None, seed=3, per_document=10)
    passages = list(corpus.passages())
    assert passages == list(Corpus(45, words=60, scifact=None, seed=3).passages())
    assert len(passages) == 45
    assert all(60 <= len(p.split()) < 60 + 25 for p in passages)  # sentences of 8-24 words until >= 60
    batches = list(corpus.chunk_batches("t", batch=25))
    assert [len(b) for b in batches] == [20, 20, 5]  # rounded down to whole documents of 10
    ids = [{c.document_id for c in b} for b in batches]
    assert not ids[0] & ids[1] and not ids[1] & ids[2]
    queries = corpus.queries(30)
    assert len(queries) == 30 and all(6 <= len(q.split()) <= 10 for q in queries)


def test_random_vectors_are_unit_vectors_of_the_dimension() -> None:
    matrix = random_vectors(16, seed=1)(["a", "b", "c"])
    assert matrix.shape == (3, 16)
    assert abs(float((matrix**2).sum(axis=1).max()) - 1.0) < 1e-5


def test_a_loaded_corpus_is_served_by_hybrid_search() -> None:
    corpus = Corpus(40, words=40, scifact=None, seed=5)
    loaded: dict[str, int] = {}

    def factory(settings: Settings) -> Resources:
        res = build_resources(
            settings,
            embedder=HashEmbedder(),
            store=InMemoryStore(),
            sender=RecordingSender(),
            redis_client=fakeredis.FakeRedis(decode_responses=True),
        )
        models = res.models.current()
        loaded["chunks"] = load(
            corpus,
            tenant="bench",
            store=models.store,
            records=res.records,
            vectors=lambda texts: models.embedder.embed_documents(list(texts)),
            batch=15,
        )
        return res

    settings = Settings(api=ApiSettings(keys={KEY: "bench"}, rate_limit_per_s=0, cache_ttl_s=0))
    query = corpus.queries(1)[0]
    with TestClient(create_app(settings, resources_factory=factory)) as client:
        answer = client.post(
            "/v1/search",
            json={"query": query, "mode": "hybrid", "candidates": 50, "top_k": 10},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert loaded["chunks"] == 40
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["mode"] == "hybrid"
    assert body["candidates"] == 40  # every chunk served: each document accepted and activated
    assert {"embed", "stage1", "total"} <= set(body["timings_ms"])
    assert all(hit["document_id"].startswith("bench-") for hit in body["hits"])


def test_records_count_each_documents_chunks() -> None:
    records = Records("redis://unused", client=fakeredis.FakeRedis(decode_responses=True))
    store = InMemoryStore()
    store.ensure_collection(embedder_name="random", dimension=8)
    load(
        Corpus(25, words=20, scifact=None),
        tenant="t",
        store=store,
        records=records,
        vectors=random_vectors(8),
    )
    assert store.count("t") == 25
    assert records.active_versions("t", ["bench-0", "bench-2"]) == {
        "bench-0": "bench-v1",
        "bench-2": "bench-v1",
    }
    assert records.get_document("t", "bench-2").chunks == 5


def test_knee_is_the_fewest_clients_within_the_share_of_the_peak() -> None:
    def run(clients: int, answers: int) -> Run:
        out = Run(clients, seconds=1.0, started=0.0)
        out.answers = [Answer(0.0, 1.0, 200) for _ in range(answers)]
        return out

    runs = [run(1, 10), run(8, 50), run(32, 58), run(64, 60)]
    assert knee_of(runs, 0.9) == 32
    assert knee_of(runs, 0.8) == 8


def test_closed_loop_counts_answers_and_honours_retry_after() -> None:
    """A server that refuses every other request with Retry-After: the refused client waits, and only the
    200s count as goodput; a degraded 200 is not goodput."""

    async def scenario() -> tuple[Run, float]:
        served = {"n": 0}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                served["n"] += 1
                if served["n"] % 2 == 0:
                    writer.write(b"HTTP/1.1 429 Too Many\r\nRetry-After: 0.3\r\nContent-Length: 2\r\n\r\n{}")
                else:
                    body = json.dumps(
                        {"timings_ms": {"embed": 1.0, "total": 2.0}, "degraded": served["n"] == 1}
                    )
                    writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Client(f"http://127.0.0.1:{port}")
        try:
            result = await closed_loop(client, [b"{}"], clients=1, seconds=0.5)
        finally:
            client.close()
            server.close()
        return result, result.seconds

    run, seconds = asyncio.run(scenario())
    ok, refused = run.count(200), run.count(429)
    assert refused >= 1 and ok >= 1
    assert ok + refused <= 4  # one client waiting 0.3 s after each refusal sends few requests in 0.5 s
    assert run.stage_means()["embed"] == pytest.approx(1.0)
    assert run.goodput() == pytest.approx((ok - 1) / seconds)  # the first 200 was degraded


def test_engine_rows_come_from_two_scrapes_of_the_engine_counters() -> None:
    from api import metrics
    from engine.engine import EngineStats
    from tests.benchmarks.profiling import engine_counters, engine_row

    def scrape(**values: float) -> dict[str, dict[str, float]]:
        return engine_counters(metrics.render({"reranker": EngineStats(**values)})[0].decode())

    before = scrape(batches=10, requests=12, sequences=600, tokens=90_000, served_tokens=99_000)
    after = scrape(
        batches=30, requests=52, sequences=2600, tokens=490_000, served_tokens=539_000, device_seconds=1.5
    )
    assert set(before) == {"reranker"} and after["reranker"]["tokens_computed"] == 490_000
    row = engine_row("8", "reranker (rerank server)", before["reranker"], after["reranker"], seconds=2.0)
    # 20 batches in 2 s, 40 request parts, 2000 sequences, 400k computed tokens, 1.5 s of device time
    assert row == "| 8 | reranker (rerank server) | 10.0 | 2.0 | 100 | 20,000 | 200k | 75% |"
    assert engine_row("1", "embedder (API)", after["reranker"], after["reranker"], 1.0).endswith(
        "| 0 | - | - | - | - | - |"
    )


def test_a_py_spy_summary_pools_threads_by_name_and_shares_their_cpu(tmp_path) -> None:
    from tests.benchmarks.profiling import summary

    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (11): engine-batcher;run (engine/engine.py:1);forward (engine/runner.py:2) 150\n"
        "thread (12): AnyIO worker thread;rank (api/routes/rerank.py:3);_encode (reranking/qwen3.py:4) 30\n"
        "thread (13): AnyIO worker thread;rank (api/routes/rerank.py:3);count_pieces (api/compat.py:5) 10\n"
        'process 9:"python";thread (11): engine-batcher;run (engine/engine.py:1) 50\n'
    )
    text = summary(raw, seconds=2.0, rate=100)
    rows = text.splitlines()[4:]  # after the caption, a blank line and the table's head
    assert rows == [
        "| engine-batcher | 1 | 100% | forward (runner.py) 75%, run (engine.py) 25% |",
        "| AnyIO worker thread | 2 | 20% | _encode (qwen3.py) 75%, count_pieces (compat.py) 25% |",
    ]
