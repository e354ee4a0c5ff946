"""CrossEncoderReranker: sigmoid of the model's logit, once, whatever activation the folder declares."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reranking.backends.cross_encoder import CrossEncoderReranker
from reranking.errors import RerankInputError, RerankUnavailableError

QUERY = "how many people live in Berlin?"
DOCS = [
    "Berlin had a population of 3,520,031 in 2019.",
    "Berlin is well known for its museums.",
    "",
    "The quick brown fox jumps over the lazy dog " * 5,
    "Einwohner: 3,5 Millionen",
]


def reference_scores(folder: Path, query: str, docs: list[str]) -> np.ndarray:
    """Plain transformers: the pair through the classifier, then sigmoid."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer([query] * len(docs), docs, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.squeeze(-1)
    return torch.sigmoid(logits).numpy()


def _with_activation(src: Path, dst: Path, activation: str) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": activation}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_scores_are_sigmoid_of_logits(cross_encoder_reranker, tiny_cross_encoder_dir: Path) -> None:
    expected = reference_scores(tiny_cross_encoder_dir, QUERY, DOCS)
    hits = cross_encoder_reranker.rank(QUERY, DOCS)
    ours = np.array([h.score for h in sorted(hits, key=lambda h: h.index)])
    assert np.abs(ours - expected).max() < 1e-5
    assert expected.max() - expected.min() > 0.05  # a double sigmoid would squeeze these into (0.5, 0.73)


@pytest.mark.parametrize(
    "activation", ["torch.nn.modules.linear.Identity", "torch.nn.modules.activation.Sigmoid"]
)
def test_saved_activation_does_not_change_the_scale(
    tiny_cross_encoder_dir: Path, tmp_path: Path, activation: str
) -> None:
    folder = _with_activation(tiny_cross_encoder_dir, tmp_path / "ce", activation)
    hits = CrossEncoderReranker(model=str(folder)).rank(QUERY, DOCS)
    ours = np.array([h.score for h in sorted(hits, key=lambda h: h.index)])
    assert np.abs(ours - reference_scores(tiny_cross_encoder_dir, QUERY, DOCS)).max() < 1e-5


def test_hits_sorted_top_k_and_empty(cross_encoder_reranker) -> None:
    hits = cross_encoder_reranker.rank(QUERY, DOCS)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert sorted(h.index for h in hits) == list(range(len(DOCS)))
    assert cross_encoder_reranker.rank(QUERY, DOCS, top_k=3) == hits[:3]
    assert cross_encoder_reranker.rank(QUERY, []) == []
    assert cross_encoder_reranker.name == "cross-encoder:tiny-cross-encoder"
    with pytest.raises(RerankInputError):
        cross_encoder_reranker.rank("", DOCS)


def test_batch_equals_single_calls(cross_encoder_reranker) -> None:
    batched = [h.score for h in sorted(cross_encoder_reranker.rank(QUERY, DOCS), key=lambda h: h.index)]
    singles = [cross_encoder_reranker.rank(QUERY, [d])[0].score for d in DOCS]
    assert np.abs(np.array(batched) - np.array(singles)).max() < 1e-5


@pytest.mark.usefixtures("hub_offline")
def test_unreachable_hub_id_fails_fast_naming_the_setting() -> None:
    started = time.perf_counter()
    with pytest.raises(RerankUnavailableError, match="RERANK_MODEL"):
        CrossEncoderReranker(model="sieve-tests/no-such-cross-encoder").warm_up()
    assert time.perf_counter() - started < 5.0


def test_max_tokens_truncates_the_pair(tiny_cross_encoder_dir: Path) -> None:
    long_doc = "Berlin has many districts and a long history. " * 20
    short = CrossEncoderReranker(model=str(tiny_cross_encoder_dir), max_tokens=24)
    [hit] = short.rank(QUERY, [long_doc])
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir).eval()
    batch = tokenizer([QUERY], [long_doc], truncation=True, max_length=24, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 24
    with torch.no_grad():
        expected = torch.sigmoid(model(**batch).logits[0, 0]).item()
    assert abs(hit.score - expected) < 1e-5
    assert abs(hit.score - reference_scores(tiny_cross_encoder_dir, QUERY, [long_doc])[0]) > 1e-4


def _planted(n: int = 30, at: int = 20) -> str:
    facts = [f"Fact {i}: the district library opens at {i} in the morning." for i in range(n)]
    facts[at] = "A zebra sleeps under the old stone bridge."
    return " ".join(facts)


@pytest.fixture(scope="module")
def windowed(tiny_cross_encoder_dir: Path) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(model=str(tiny_cross_encoder_dir), max_tokens=64)
    reranker.warm_up()
    return reranker


def test_window_spans_cover_a_long_document(windowed: CrossEncoderReranker) -> None:
    doc = "  " + _planted() + " "
    [spans, [whole]] = windowed.window_spans(QUERY, [doc, "Berlin is big."])
    assert whole == (0, len("Berlin is big."))
    assert len(spans) > 2 and spans[0][0] == 0 and spans[-1][1] == len(doc)
    for (a_start, a_end), (b_start, b_end) in zip(spans, spans[1:], strict=False):
        assert a_start < b_start < a_end < b_end  # in order, each overlapping the next: no gap
    tokenizer = windowed._model.tokenizer
    budget = 64 - len(tokenizer(QUERY, add_special_tokens=False)["input_ids"]) - 3  # [CLS] q [SEP] d [SEP]
    assert all(len(tokenizer(doc[a:b], add_special_tokens=False)["input_ids"]) <= budget for a, b in spans)


def test_windows_score_each_window_in_one_call_and_report_the_best(
    windowed: CrossEncoderReranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = ["Berlin is big.", _planted()]
    [spans, long_spans] = windowed.window_spans(QUERY, docs)
    each = windowed.score([(QUERY, docs[1][a:b]) for a, b in long_spans])
    hits = {h.index: h for h in windowed.rank(QUERY, docs, windows=True)}
    best = int(np.argmax(each))
    assert abs(hits[1].score - float(each[best])) < 1e-5
    assert hits[1].window is not None and (hits[1].window.index, hits[1].window.count) == (best, len(each))
    assert (hits[1].window.start, hits[1].window.end) == long_spans[best]
    assert hits[0].window is not None and hits[0].window.count == 1
    # Without windows the pair is cut at the budget: the first window's score, no window reported.
    [plain] = [h for h in windowed.rank(QUERY, docs) if h.index == 1]
    assert abs(plain.score - float(each[0])) < 1e-3 and plain.window is None

    # A scorer that finds the planted words: the reported span holds them, all windows in one call.
    calls: list[int] = []

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        calls.append(len(pairs))
        return np.array([0.9 if "zebra sleeps" in d else 0.1 for _, d in pairs], dtype=np.float32)

    monkeypatch.setattr(windowed, "score", score)
    [top, _] = windowed.rank(QUERY, docs, windows=True)
    at = docs[1].index("zebra sleeps")
    assert top.index == 1 and top.window is not None and top.window.index > 0
    assert top.window.start <= at and at + len("zebra sleeps") <= top.window.end
    assert calls == [1 + len(long_spans)]
