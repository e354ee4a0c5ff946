"""Qwen3-Reranker backend against a plain reference of the model card's code (tiny Qwen3, real vocabulary)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.prompts import QWEN3_RERANKER_INSTRUCTION
from reranking.backends.qwen3 import (
    PREFIX,
    SUFFIX,
    Qwen3Reranker,
    format_body,
    window_starts,
)
from reranking.errors import RerankInputError, RerankUnavailableError
from reranking.reranker import RankedHit

QUERY = "what is the capital of France?"
TOL = 1e-4
DOCS = [
    "The capital of France is Paris.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "",
    "短い中文文档：北京是中国的首都。",
    "def add(a, b):\n    return a + b\n",
    "Paris " * 40,
]

# Written out from the model card (FACTS.md), not derived from the module under test.
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


class Reference:
    """The model card's code: full-vocabulary logits of AutoModelForCausalLM, fp32, tokenizer padding."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.prefix_ids = self.tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")
        self.no = self.tokenizer.convert_tokens_to_ids("no")

    def inputs(self, query: str, docs: list[str], instruction: str, max_length: int) -> dict:
        pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {d}" for d in docs]
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(self.prefix_ids) - len(self.suffix_ids),
        )
        for i, ids in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_ids + ids + self.suffix_ids
        return inputs

    def score_ids(self, batch_ids: list[list[int]]) -> list[float]:
        padded = self.tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**padded).logits[:, -1, :]
        pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1)
        return torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().tolist()

    def scores(
        self, query: str, docs: list[str], instruction: str = CARD_INSTRUCTION, max_length: int = 8192
    ) -> list[float]:
        return self.score_ids(self.inputs(query, docs, instruction, max_length)["input_ids"])


@pytest.fixture(scope="module")
def reference(tiny_qwen3_reranker_dir: Path) -> Reference:
    return Reference(tiny_qwen3_reranker_dir)


@pytest.fixture(scope="module")
def short_reranker(tiny_qwen3_reranker_dir: Path) -> Qwen3Reranker:
    reranker = Qwen3Reranker(model=str(tiny_qwen3_reranker_dir), max_tokens=128)
    reranker.warm_up()
    return reranker


def _scores_by_index(hits: list[RankedHit]) -> list[float]:
    return [h.score for h in sorted(hits, key=lambda h: h.index)]


def _docs(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    words = [
        "Paris",
        "France",
        "capital",
        "river",
        "Seine",
        "巴黎",
        "museum",
        "population",
        "1789",
        "the",
        "of",
        "a",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def test_template_strings_are_the_model_cards() -> None:
    assert PREFIX == CARD_PREFIX
    assert SUFFIX == CARD_SUFFIX
    assert QWEN3_RERANKER_INSTRUCTION == CARD_INSTRUCTION
    assert format_body("q", "d", "i") == "<Instruct>: i\n<Query>: q\n<Document>: d"


def test_scores_match_reference(qwen3_reranker: Qwen3Reranker, reference: Reference) -> None:
    ours = _scores_by_index(qwen3_reranker.rank(QUERY, DOCS))
    expected = reference.scores(QUERY, DOCS)
    assert max(abs(a - b) for a, b in zip(ours, expected, strict=True)) < TOL
    assert max(expected) - min(expected) > 0.05  # the tiny model's scores spread: the comparison can fail


def test_per_request_instruction_matches_reference(
    qwen3_reranker: Qwen3Reranker, reference: Reference
) -> None:
    instruction = "Given a claim, retrieve documents that support or refute it"
    ours = _scores_by_index(qwen3_reranker.rank(QUERY, DOCS, instruction=instruction))
    expected = reference.scores(QUERY, DOCS, instruction=instruction)
    assert max(abs(a - b) for a, b in zip(ours, expected, strict=True)) < TOL
    default = _scores_by_index(qwen3_reranker.rank(QUERY, DOCS))
    assert max(abs(a - b) for a, b in zip(ours, default, strict=True)) > 1e-3


def test_hits_are_sorted_and_top_k(qwen3_reranker: Qwen3Reranker) -> None:
    hits = qwen3_reranker.rank(QUERY, DOCS)
    assert sorted(h.index for h in hits) == list(range(len(DOCS)))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert qwen3_reranker.rank(QUERY, DOCS, top_k=2) == hits[:2]
    assert qwen3_reranker.rank(QUERY, []) == []


def test_ties_are_broken_by_index(qwen3_reranker: Qwen3Reranker) -> None:
    hits = qwen3_reranker.rank(QUERY, ["same text", "other", "same text"])
    same = [h.index for h in hits if h.index != 1]
    assert same == [0, 2]


def test_empty_query_is_an_input_error(qwen3_reranker: Qwen3Reranker) -> None:
    with pytest.raises(RerankInputError):
        qwen3_reranker.rank("  ", DOCS)


def test_batch_of_64_equals_single_calls(qwen3_reranker: Qwen3Reranker) -> None:
    docs = _docs(64)
    batched = _scores_by_index(qwen3_reranker.rank(QUERY, docs))
    singles = [qwen3_reranker.rank(QUERY, [d])[0].score for d in docs]
    assert max(abs(a - b) for a, b in zip(batched, singles, strict=True)) < 1e-5


def test_input_order_does_not_change_scores(qwen3_reranker: Qwen3Reranker) -> None:
    docs = _docs(20, seed=5)
    perm = list(range(len(docs)))
    random.Random(1).shuffle(perm)
    forward = _scores_by_index(qwen3_reranker.rank(QUERY, docs))
    shuffled = _scores_by_index(qwen3_reranker.rank(QUERY, [docs[i] for i in perm]))
    assert max(abs(forward[p] - s) for p, s in zip(perm, shuffled, strict=True)) < 1e-5


def test_truncation_keeps_prefix_and_suffix(short_reranker: Qwen3Reranker, reference: Reference) -> None:
    long_doc = "Paris is the capital and largest city of France. " * 40
    [windows] = short_reranker.prepare(QUERY, [long_doc])
    assert len(windows) > 1
    for seq in windows:
        assert len(seq) <= 128
        assert seq[: len(reference.prefix_ids)] == reference.prefix_ids
        assert seq[-len(reference.suffix_ids) :] == reference.suffix_ids
    # The first window is exactly the model card's truncated input.
    assert windows[0] == reference.inputs(QUERY, [long_doc], CARD_INSTRUCTION, 128)["input_ids"][0]
    assert len(windows[0]) == 128


def test_long_document_is_scored_by_its_best_window(
    short_reranker: Qwen3Reranker, reference: Reference
) -> None:
    long_doc = " ".join(f"fact {i}: Paris hosts museum number {i}." for i in range(40))
    [windows] = short_reranker.prepare(QUERY, [long_doc])
    full = reference.inputs(QUERY, [long_doc], CARD_INSTRUCTION, 100_000)["input_ids"][0]
    head_end = len(reference.prefix_ids) + len(
        reference.tokenizer.encode(
            format_body(QUERY, "", CARD_INSTRUCTION).rstrip(), add_special_tokens=False
        )
    )
    doc_ids = full[head_end : -len(reference.suffix_ids)]
    pieces = [seq[head_end : -len(reference.suffix_ids)] for seq in windows]
    # Windows cover the whole document, in order, overlapping, and share the head.
    assert all(seq[:head_end] == full[:head_end] for seq in windows)
    starts = window_starts(len(doc_ids), len(pieces[0]))
    assert len(starts) == len(pieces) and starts[0] == 0 and starts[-1] + len(pieces[-1]) == len(doc_ids)
    assert all(b - a < len(pieces[0]) for a, b in zip(starts, starts[1:], strict=False))  # overlap
    assert all(piece == doc_ids[s : s + len(piece)] for s, piece in zip(starts, pieces, strict=True))
    each = [reference.score_ids([seq])[0] for seq in windows]
    [hit] = short_reranker.rank(QUERY, [long_doc])
    assert abs(hit.score - max(each)) < TOL
    assert max(each) > each[0] + 1e-3  # the best window is not the first: cutting the document would fail
    # Asked for windows: the same score, and the window that won is the best of the reference's.
    [windowed] = short_reranker.rank(QUERY, [long_doc], windows=True)
    assert windowed.score == hit.score and hit.window is None
    assert windowed.window is not None
    assert (windowed.window.index, windowed.window.count) == (int(np.argmax(each)), len(windows))


def _planted(n: int = 40, at: int = 27) -> str:
    facts = [f"fact {i}: the museum opens at {i} in the morning." for i in range(n)]
    facts[at] = "A zebra sleeps under the old stone bridge."
    return " ".join(facts)


def test_window_spans_cover_the_document_and_hold_its_tokens(
    short_reranker: Qwen3Reranker, reference: Reference
) -> None:
    doc = _planted()
    [sequences], [spans] = short_reranker.prepare_windows(QUERY, [doc])
    assert len(spans) == len(sequences) > 2
    assert spans[0][0] == 0 and spans[-1][1] == len(doc)
    for (a_start, a_end), (b_start, b_end) in zip(spans, spans[1:], strict=False):
        assert a_start < b_start < a_end < b_end  # in order, each overlapping the next: no gap
    head_end = len(reference.prefix_ids) + len(
        reference.tokenizer.encode(
            format_body(QUERY, "", CARD_INSTRUCTION).rstrip(), add_special_tokens=False
        )
    )
    for i, (seq, (start, end)) in enumerate(zip(sequences, spans, strict=True)):
        text = reference.tokenizer.decode(seq[head_end : -len(reference.suffix_ids)])
        # the span is exactly the window's document tokens (the first one's leading blank is the head's)
        assert (text.lstrip() if i == 0 else text) == doc[start:end]
    [[whole]] = short_reranker.prepare_windows(QUERY, ["Paris is lovely."])[1]
    assert whole == (0, len("Paris is lovely."))


def _contains(seq: list[int], part: list[int]) -> bool:
    return any(seq[i : i + len(part)] == part for i in range(len(seq) - len(part) + 1))


def test_the_window_holding_the_planted_passage_wins(
    tiny_qwen3_reranker_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real tokenizer and windows, a scorer that finds the planted words: the reported span holds them."""
    reranker = Qwen3Reranker(model=str(tiny_qwen3_reranker_dir), max_tokens=128)
    reranker.load_template()
    planted = reranker._tokenizer.encode(" zebra sleeps", add_special_tokens=False)
    batches: list[int] = []

    def score_sequences(sequences: list[list[int]]) -> np.ndarray:
        batches.append(len(sequences))
        return np.array([0.9 if _contains(s, planted) else 0.1 for s in sequences], dtype=np.float32)

    monkeypatch.setattr(reranker, "score_sequences", score_sequences)
    docs = ["Paris is lovely.", _planted(), _planted(at=3).replace("zebra", "horse")]
    hits = reranker.rank(QUERY, docs, windows=True)
    assert [h.index for h in hits] == [1, 0, 2]
    window = hits[0].window
    assert window is not None and window.count > 2 and 0 < window.index < window.count - 1
    at = docs[1].index("zebra sleeps")
    assert window.start <= at and at + len("zebra sleeps") <= window.end
    assert hits[2].window is not None and hits[2].window.index == 0  # no window stands out: the first
    sequences = reranker.prepare(QUERY, docs)
    assert batches == [sum(len(w) for w in sequences)]  # every window of every document in one call


def test_a_query_that_leaves_no_room_is_an_input_error(short_reranker: Qwen3Reranker) -> None:
    with pytest.raises(RerankInputError, match="RERANK_MAX_TOKENS"):
        short_reranker.rank("capital " * 60, ["Paris " * 60])


def test_only_the_yes_no_rows_of_the_lm_head_are_used(qwen3_reranker: Qwen3Reranker, reference) -> None:
    head = reference.model.get_output_embeddings().weight
    assert torch.equal(qwen3_reranker._head, head[[reference.no, reference.yes]].float())
    assert qwen3_reranker.name == "qwen3-reranker:tiny-qwen3-reranker"
    assert qwen3_reranker.reorders is True


@pytest.mark.usefixtures("hub_offline")
def test_unreachable_hub_id_fails_fast_naming_the_setting() -> None:
    reranker = Qwen3Reranker(model="sieve-tests/no-such-qwen3-reranker")
    started = time.perf_counter()
    with pytest.raises(RerankUnavailableError, match="RERANK_MODEL"):
        reranker.warm_up()
    assert time.perf_counter() - started < 5.0


def test_revision_is_a_trained_folders_and_unknown_for_a_bare_hub_id(tmp_path: Path) -> None:
    """What the runtime gate binds a decision to (``api.gate_store.reranker_identity``)."""
    from reranking.backends.cross_encoder import CrossEncoderReranker

    (tmp_path / "sieve-model.json").write_text('{"revision": "r3"}', encoding="utf-8")
    assert Qwen3Reranker(model=str(tmp_path)).revision == "r3"
    assert CrossEncoderReranker(model=str(tmp_path)).revision == "r3"
    assert Qwen3Reranker(model="Qwen/Qwen3-Reranker-0.6B").revision is None


def test_the_backend_encoding_is_the_wrappers(qwen3_reranker: Qwen3Reranker) -> None:
    """``_encode`` calls the Rust tokenizer directly: the same ids and offsets as the transformers wrapper."""
    qwen3_reranker.load_template()
    bodies = [*_docs(6), "naïve café — 東京の研究 🙂 x" * 30, "", " leading and  double  spaces "]
    ids, offsets_of = qwen3_reranker._encode(bodies)
    offsets = [offsets_of(k) for k in range(len(bodies))]
    wrapper = qwen3_reranker._tokenizer(
        bodies, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    assert ids == [list(x) for x in wrapper["input_ids"]]
    assert [list(map(tuple, o)) for o in offsets] == [list(map(tuple, o)) for o in wrapper["offset_mapping"]]
    assert qwen3_reranker._tokenizer.backend_tokenizer.truncation is None  # the fast path was taken
