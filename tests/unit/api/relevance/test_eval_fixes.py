"""``sieve eval``: a bm25-only run embeds nothing, progress lines in logs, sampled queries, the title as each
chunk's context, and documents scored by the sum of their top chunks."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

pytest.importorskip("ir_measures")
pytest.importorskip("matplotlib")

from api.relevance.beir import load_beir, sample_ids  # noqa: E402
from api.relevance.eval_options import EvalOptions  # noqa: E402
from api.relevance.eval_probe import summed_documents  # noqa: E402
from api.relevance.eval_progress import LogProgress, duration  # noqa: E402
from api.relevance.evaluate import evaluate  # noqa: E402
from reranking import NoneReranker  # noqa: E402
from retrieval.memory_store import InMemoryStore  # noqa: E402
from retrieval.types import Candidate  # noqa: E402
from tests.support.fakes import HashEmbedder  # noqa: E402
from tests.support.tiny_beir import write_tiny_beir  # noqa: E402


class NoEmbedding(HashEmbedder):
    """Counts tokens like the hash embedder; refuses to embed anything."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError(f"embedded {len(texts)} passages")

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        raise AssertionError(f"embedded {len(texts)} queries")


def run(tmp_path: Path, options: EvalOptions, **kwargs: Any) -> dict[str, Any]:
    return evaluate(
        load_beir(write_tiny_beir(tmp_path / "tiny")),
        tmp_path / "out",
        store=kwargs.pop("store", InMemoryStore()),
        embedder=kwargs.pop("embedder", HashEmbedder()),
        reranker=NoneReranker(),
        options=options,
        console=kwargs.pop("console", Console(quiet=True)),
    )


def test_a_bm25_only_run_does_not_embed_the_corpus(tmp_path: Path) -> None:
    report = run(tmp_path, EvalOptions(modes=("bm25",)), embedder=NoEmbedding())

    assert report["index"]["embedded"] is False and report["index"]["chunks"] == 6
    assert report["configurations"][0]["metrics"]["R@100"] == pytest.approx(1.0)


def test_progress_lines_in_a_log(tmp_path: Path) -> None:
    log = io.StringIO()
    run(tmp_path, EvalOptions(modes=("bm25",)), console=Console(file=log, force_terminal=False))

    lines = log.getvalue().splitlines()
    assert any(line.startswith("indexing documents: 6/6 (") for line in lines)
    assert any(line.startswith("running queries: 4/4 (") for line in lines)


def test_log_progress_reports_rate_and_eta_at_most_every_interval() -> None:
    now = [0.0]
    log = io.StringIO()
    bar = LogProgress(Console(file=log), "indexing documents", 1000, every_s=30, clock=lambda: now[0])
    now[0] = 10.0
    bar.advance(100)  # within the interval: nothing yet
    now[0] = 40.0
    bar.advance(300)  # 400 in 40 s: 10/s, 600 to go: ETA 1m00s
    now[0] = 100.0
    bar.advance(600)

    assert log.getvalue().splitlines() == [
        "indexing documents: 400/1,000 (10.0/s, ETA 1m00s)",
        "indexing documents: 1,000/1,000 (10.0/s, 1m40s)",
    ]
    assert (duration(9), duration(172), duration(3780)) == ("9s", "2m52s", "1h03m")


def test_queries_are_a_seeded_random_sample_in_file_order(tmp_path: Path) -> None:
    folder = write_tiny_beir(tmp_path / "tiny")
    judged = ["q1", "q2", "q3", "q4"]

    samples = {tuple(load_beir(folder, max_queries=2, seed=seed).queries) for seed in range(8)}

    assert all(len(s) == 2 and list(s) == sorted(s, key=judged.index) for s in samples)
    assert len(samples) > 1  # not always the first two
    assert tuple(load_beir(folder, max_queries=2, seed=3).queries) == tuple(sample_ids(judged, 2, 3))
    assert list(load_beir(folder, max_queries=2).queries) == ["q1", "q2"]  # no seed: the first ones


def test_the_title_is_every_chunks_context_not_its_text(tmp_path: Path) -> None:
    store = InMemoryStore()
    run(tmp_path, EvalOptions(modes=("bm25",)), store=store)

    hits = store.search("eval", None, limit=5, mode="bm25", query_text="geology")  # d6's title only

    assert [(hit.document_id, hit.text) for hit in hits] == [
        ("d6", "Tectonic plates drift slowly over the mantle.")
    ]


def test_without_context_the_title_opens_the_text(tmp_path: Path) -> None:
    store = InMemoryStore()
    run(tmp_path, EvalOptions(modes=("bm25",), context=False), store=store)

    (hit,) = store.search("eval", None, limit=5, mode="bm25", query_text="geology")

    assert hit.text == "Geology\n\nTectonic plates drift slowly over the mantle."


def candidate(doc: str, score: float) -> Candidate:
    return Candidate(id=f"{doc}-{score}", document_id=doc, version="v", position=0, text="", score=score)


def test_summed_documents_add_the_top_chunks_of_each_document() -> None:
    found = [candidate("a", 5.0), candidate("b", 4.0), candidate("b", 3.0), candidate("a", 0.5)]
    found += [candidate("b", 2.0), candidate("b", 1.0), candidate("c", 0.1)]

    assert summed_documents(found, depth=10, top=3) == [("b", 9.0), ("a", 5.5), ("c", 0.1)]
    assert summed_documents(found, depth=2, top=1) == [("a", 5.0), ("b", 4.0)]


def test_sum_aggregation_adds_configurations(tmp_path: Path) -> None:
    report = run(tmp_path, EvalOptions(aggregations=("best", "sum")))

    names = [c["name"] for c in report["configurations"]]
    assert names == ["bm25", "bm25+sum", "dense", "dense+sum", "hybrid", "hybrid+sum"]
    with pytest.raises(ValueError, match="aggregations"):
        run(tmp_path, EvalOptions(aggregations=("mean",)))
