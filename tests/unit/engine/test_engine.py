"""The packed inference engine on CPU (fp32, eager) against the transformers backends (tiny Qwen3).

The GPU path (bf16, compiled, CUDA graphs) is checked against an fp32 reference in ``tests/gpu/``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.engine import Engine, common_prefix
from engine.errors import EngineInputError, EngineOverloadedError, EngineUnavailableError
from engine.graphs import graph_inputs, pack
from reranking.backends.qwen3_engine import EngineReranker
from reranking.errors import RerankInputError
from retrieval.backends.qwen3_engine import EngineEmbedder

TOL = 1e-4
QUERY = "what is the capital of France?"
DOCS = [
    "The capital of France is Paris.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "",
    "短い中文文档：北京是中国的首都。",
    "def add(a, b):\n    return a + b\n",
    "Paris " * 40,  # longer than max_tokens below: scored by its best window
]


def _sequences(seed: int, count: int, low: int = 1, high: int = 90) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(151643) for _ in range(rng.randint(low, high))] for _ in range(count)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.fixture(scope="module")
def tiny_causal(tiny_qwen3_reranker_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen3_reranker_dir, dtype=torch.float32).eval()


@pytest.fixture()
def engine(tiny_causal) -> Iterator[Engine]:
    e = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=256)
    e.warm_up()
    yield e
    e.close()


@pytest.mark.slow  # whole forwards of the engine and of transformers, compared
class TestNumerics:
    def test_scores_equal_qwen3_reranker(self, engine: Engine, qwen3_reranker) -> None:
        seqs = _sequences(0, 12, high=200)
        expected = qwen3_reranker.score_sequences(seqs)
        np.testing.assert_allclose(_sigmoid(engine.run(seqs)), expected, atol=TOL, rtol=0)

    def test_rank_equals_qwen3_reranker_with_windows(self, tiny_qwen3_reranker_dir: Path) -> None:
        from reranking.backends.qwen3 import Qwen3Reranker

        exact = Qwen3Reranker(model=str(tiny_qwen3_reranker_dir), max_tokens=96, batch_size=4)
        served = EngineReranker(model=str(tiny_qwen3_reranker_dir), device="cpu", max_tokens=96)
        try:
            for instruction in (None, "Find passages that name a capital city"):
                want = exact.rank(QUERY, DOCS, instruction=instruction)
                got = served.rank(QUERY, DOCS, instruction=instruction)
                assert [h.index for h in got] == [h.index for h in want]
                np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=TOL, rtol=0)
            assert served.rank(QUERY, DOCS, top_k=2) == served.rank(QUERY, DOCS)[:2]
            assert served.rank(QUERY, []) == []
            with pytest.raises(RerankInputError):
                served.rank("  ", DOCS)
        finally:
            served.engine.close()

    @pytest.mark.parametrize("dimension", [None, 32])
    def test_embeddings_equal_qwen3_embedder(
        self, tiny_qwen3_embedding_dir: Path, dimension: int | None
    ) -> None:
        from retrieval.backends.qwen3 import Qwen3Embedder

        exact = Qwen3Embedder(model=str(tiny_qwen3_embedding_dir), dimension=dimension, batch_size=3)
        served = EngineEmbedder(model=str(tiny_qwen3_embedding_dir), device="cpu", dimension=dimension)
        try:
            texts = [d or "empty" for d in DOCS]
            np.testing.assert_allclose(served.embed_documents(texts), exact.embed_documents(texts), atol=TOL)
            np.testing.assert_allclose(
                served.embed_queries(texts[:3]), exact.embed_queries(texts[:3]), atol=TOL
            )
            assert served.name == exact.name and served.dimension == exact.dimension
            assert served.max_tokens == exact.max_tokens
            assert served.count_tokens(DOCS[3]) == exact.count_tokens(DOCS[3])
            assert served.embed_documents([]).shape == (0, exact.dimension)
        finally:
            served.engine.close()


class TestPacking:
    def test_batch_equals_single(self, engine: Engine) -> None:
        seqs = _sequences(1, 10, high=120)
        together = engine.run(seqs)
        alone = np.array([engine.run([s])[0] for s in seqs])
        np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
        assert engine.stats.batches >= 3  # 10 sequences of up to 120 tokens do not fit one 256-token batch

    def test_graph_padding_does_not_change_results(self, engine: Engine) -> None:
        """The padded layout replayed by CUDA graphs, run eagerly: real rows are untouched by padding."""
        seqs = _sequences(2, 5, high=40)
        ids, _, cu, _ = pack(seqs)
        ints, full_cu = graph_inputs(ids, cu, tokens=256, slots=9)
        t = torch.from_numpy(ints)
        with torch.inference_mode():
            padded = engine.runner.forward(
                t[:256], t[256:512], torch.from_numpy(full_cu), t[512:], max_len=256
            ).numpy()
        np.testing.assert_allclose(padded[: len(seqs)], engine.run(seqs), atol=1e-5, rtol=0)
        assert np.all(np.diff(full_cu) > 0)
        with pytest.raises(ValueError):
            graph_inputs(ids, cu, tokens=int(cu[-1]) + 3, slots=9)  # no room for a row per unused slot

    def test_rounded_token_counts_do_not_change_results(self, engine: Engine) -> None:
        """Filler sequences that round a large batch's tokens up (on by default on CUDA) leave every real
        row as it was and give no row of their own, with and without a shared prefix."""
        runner = engine.runner
        plain = _sequences(3, 11, low=380, high=480)  # over the 4,096 tokens of the largest graph bucket
        head = _sequences(4, 1, low=20, high=20)[0]
        segments = [np.asarray(head), *map(np.asarray, _sequences(5, 6, low=700, high=800))]
        prefix_of = np.array([-1] + [0] * 6)
        try:
            assert runner._rounded(plain[:3], None)[0] == plain[:3]  # under 4,096 tokens: as they come
            for seqs, parents, rows in ((plain, None, 11), (segments, prefix_of, 6)):
                runner.round_tokens = 1
                want, _ = runner.run(seqs, parents)
                runner.round_tokens = 64
                padded, padded_parents = runner._rounded(seqs, parents)
                assert len(padded) > len(seqs) and sum(map(len, padded)) % 64 == 0
                assert max(map(len, padded)) == max(map(len, seqs))
                if parents is not None:
                    assert padded_parents is not None and list(padded_parents[len(seqs) :]) == [-1] * (
                        len(padded) - len(seqs)
                    )
                got, _ = runner.run(seqs, parents)
                assert len(want) == len(got) == rows
                np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
        finally:
            runner.round_tokens = 1

    def test_shared_prefix_is_computed_once_and_scores_do_not_change(
        self, tiny_causal, qwen3_reranker
    ) -> None:
        """One query's pairs share the template head: it runs once per batch, with the same scores."""
        head = _sequences(7, 1, low=40, high=40)[0]
        seqs = [head + tail for tail in _sequences(8, 9, low=1, high=80)]
        expected = qwen3_reranker.score_sequences(seqs)
        for budget in (4096, 300):  # one batch; then parts of the request in several batches
            e = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=budget)
            e.warm_up()
            try:
                got = e.run(seqs)
                np.testing.assert_allclose(_sigmoid(got), expected, atol=TOL, rtol=0)
                assert e.stats.served_tokens == sum(map(len, seqs))
                saved = (len(seqs) - e.stats.batches) * len(head)  # the head once per batch, not per pair
                assert e.stats.tokens == e.stats.served_tokens - saved
                if budget == 300:
                    assert e.stats.batches > 1
                    assert max(e.stats.recent_batch_tokens) <= budget
            finally:
                e.close()
        unshared = Engine(
            tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=4096, share_prefix=False
        )
        unshared.warm_up()
        try:
            np.testing.assert_allclose(unshared.run(seqs), got, atol=1e-5, rtol=0)
            assert unshared.stats.tokens == unshared.stats.served_tokens
        finally:
            unshared.close()

    def test_common_prefix(self) -> None:
        ids = np.array([1] * 20 + [2, 3] + [1] * 20 + [2] + [1] * 17 + [5], dtype=np.int64)
        offsets = np.array([0, 22, 43, 61])
        assert common_prefix(ids, offsets) == 17  # the third sequence differs at token 17
        assert common_prefix(ids, offsets[:3]) == 20  # each keeps at least one token of its own
        assert common_prefix(ids[:22], offsets[:2]) == 0  # one sequence: nothing to share
        short = np.array([1] * 10 + [1] * 10, dtype=np.int64)
        assert common_prefix(short, np.array([0, 10, 20])) == 0  # under MIN_SHARED_PREFIX

    def test_equal_length_batches_take_the_dense_path_exactly(self, engine: Engine) -> None:
        """Equal lengths let attention run dense on views of the packed rows (cuDNN on the GPU)."""
        seqs = [s[:40] for s in _sequences(4, 6, low=40, high=60)]
        packed = engine.run(seqs)
        engine.runner.uniform = "sdpa"  # dense SDPA without forcing cuDNN: the same code path on CPU
        try:
            dense = engine.run(seqs)
        finally:
            engine.runner.uniform = None
        np.testing.assert_allclose(dense, packed, atol=1e-5, rtol=0)

    def test_concurrent_submits_from_8_threads(self, engine: Engine) -> None:
        work = {i: _sequences(10 + i, 6, high=60) for i in range(8)}
        expected = {i: np.array([engine.run([s])[0] for s in seqs]) for i, seqs in work.items()}
        results: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(8)

        def client(i: int) -> None:
            barrier.wait()
            futures = [engine.submit(work[i][:3]), engine.submit(work[i][3:])]
            results[i] = np.concatenate([f.result(timeout=60) for f in futures])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(results) == list(range(8))
        for i in range(8):
            np.testing.assert_allclose(results[i], expected[i], atol=1e-5, rtol=0)

    def test_token_budget_is_respected_and_requests_share_batches(self, tiny_causal) -> None:
        started = time.perf_counter()
        engine = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=50)
        try:
            requests = [_sequences(30 + i, 3, high=50) for i in range(10)]
            engine.pause()
            futures = [engine.submit(r) for r in requests]
            engine.resume()
            got = [f.result(timeout=60) for f in futures]
            for r, g in zip(requests, got, strict=True):
                np.testing.assert_allclose(g, [engine.run([s])[0] for s in r], atol=1e-5, rtol=0)
            batches = list(engine.stats.recent_batch_tokens)
            assert batches and max(batches) <= 50
            assert max(engine.stats.recent_batch_requests) > 1  # packing across requests happened
            # every request part: the 10 requests (split ones count twice) and the 30 sequences run alone
            assert engine.stats.requests >= 10 + 30 and engine.stats.requests > engine.stats.batches
            assert 0 < engine.stats.device_seconds < time.perf_counter() - started
            with pytest.raises(EngineInputError):
                engine.submit([[1] * 51])  # one sequence longer than the budget
        finally:
            engine.close()


class TestQueue:
    def test_refuses_with_overloaded_when_full(self, tiny_causal) -> None:
        engine = Engine(
            tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=64, max_queued_tokens=100
        )
        try:
            engine.warm_up()
            engine.pause()
            first = engine.submit([[5] * 30, [6] * 30])
            with pytest.raises(EngineOverloadedError):
                engine.submit([[7] * 50])
            with pytest.raises(EngineInputError):
                engine.submit([[7] * 60, [8] * 60])  # larger than the whole queue: never fits
            engine.resume()
            assert first.result(timeout=60).shape == (2,)
            assert engine.submit([[7] * 50]).result(timeout=60).shape == (1,)  # room again
        finally:
            engine.close()
        with pytest.raises(EngineUnavailableError):
            engine.submit([[1, 2, 3]])

    def test_rejects_bad_input(self, engine: Engine) -> None:
        assert engine.run([]).shape == (0,)
        with pytest.raises(EngineInputError):
            engine.submit([[]])
        with pytest.raises(EngineInputError):
            engine.submit([[151669]])  # outside the vocabulary

    def test_warm_up_is_idempotent(self, engine: Engine) -> None:
        seqs = _sequences(3, 4)
        before = engine.run(seqs)
        engine.warm_up()
        engine.warm_up()
        np.testing.assert_array_equal(engine.run(seqs), before)

    def test_warm_up_runs_on_the_batcher_thread(self, tiny_causal, monkeypatch) -> None:
        # cuDNN keeps attention plans per thread: warm-up must build them where the batches run
        from engine.runner import PackedQwen3

        seen: list[tuple[str, int]] = []
        monkeypatch.setattr(
            PackedQwen3,
            "warm_up",
            lambda self, tokens: seen.append((threading.current_thread().name, tokens)),
        )
        e = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693), token_budget=256)
        e.warm_up()
        try:
            assert seen == [("engine-batcher", 256)]
            assert [t.name for t in e._threads] == ["engine-batcher", "engine-completer"]
            assert e.run(_sequences(4, 3)).shape == (3,)  # and that thread goes on to serve
        finally:
            e.close()

    def test_a_failed_warm_up_raises_in_the_caller(self, tiny_causal, monkeypatch) -> None:
        from engine.runner import PackedQwen3

        def fail(self, tokens: int) -> None:
            raise RuntimeError("no kernel for this GPU")

        monkeypatch.setattr(PackedQwen3, "warm_up", fail)
        e = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693))
        with pytest.raises(RuntimeError, match="no kernel"):
            e.warm_up()
        monkeypatch.undo()
        e.warm_up()  # the engine can try again
        assert e.run(_sequences(5, 2)).shape == (2,)
        e.close()

    def test_a_batch_is_taken_once_a_slot_is_free(self, tiny_causal, monkeypatch) -> None:
        # Two batches in flight, both held on the "device": requests that arrive meanwhile wait for a slot and
        # then go as one batch, not one batch each taken early and queued behind the busy slots.
        from api.cli.stack import wait_for
        from engine.runner import PackedQwen3

        release = threading.Event()
        batches: list[int] = []

        class Held:
            def synchronize(self) -> None:
                release.wait(60)

        real_run = PackedQwen3.run

        def run(self, seqs, prefix_of=None):
            out, _ = real_run(self, seqs, prefix_of)
            batches.append(len(seqs))
            return out, Held()

        e = Engine(tiny_causal, head="score", head_token_ids=(2152, 9693), share_prefix=False)
        e.warm_up()
        monkeypatch.setattr(PackedQwen3, "run", run)
        try:
            first = e.submit([[5] * 20])
            wait_for(lambda: len(batches) == 1, what="the first batch", timeout=60)
            second = e.submit([[6] * 20])
            wait_for(lambda: len(batches) == 2, what="the second batch", timeout=60)  # both slots busy
            later = [e.submit([[7] * 20])]
            time.sleep(0.2)  # a batcher that takes a batch before it has a slot takes this one alone
            later += [e.submit([[8 + i] * 20]) for i in range(2)]
            time.sleep(0.2)
            assert batches == [1, 1]
            release.set()
            for future in (first, second, *later):
                assert future.result(timeout=60).shape == (1,)
            assert batches == [1, 1, 3]
        finally:
            release.set()
            e.close()
