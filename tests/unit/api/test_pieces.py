"""Word pieces of the rerank routes: ``count_pieces`` (byte translations for ASCII text) counts what ``PIECE``
matches, on every ASCII character and on text beyond ASCII."""

from __future__ import annotations

import random

import pytest

from api.compat import PIECE, count_pieces, cut_pieces


def regex_count(text: str) -> int:
    return sum(1 for _ in PIECE.finditer(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Vaccines cut the risk of measles by 97%.",
        "__init__ and snake_case_names, a__b_",
        "tabs\tnew\nlines\x0b\x0cand\x1c\x1d\x1e\x1fseparators",
        "\x00\x01\x7f control bytes are symbols",
        "C++ (x<=y) {a: [1, 2]} 3.14e-10 don't",
        "中文的句子，混合 English 和 数字 123",
        "Ünïcödé wörds ändern nichts — ½ ² ٣",
    ],
)
def test_count_matches_the_pattern(text: str) -> None:
    assert count_pieces(text) == regex_count(text)


def test_count_matches_the_pattern_on_random_ascii() -> None:
    rng = random.Random(7)
    every = [chr(c) for c in range(128)]
    common = list("ab9 _.,-'\t\n")
    for _ in range(5000):
        text = "".join(rng.choice(every if rng.random() < 0.3 else common) for _ in range(rng.randrange(40)))
        assert count_pieces(text) == regex_count(text), repr(text)


def test_cut_keeps_the_counted_pieces() -> None:
    text = "one, two_three four. five"
    assert count_pieces(text) == 8
    assert cut_pieces(text, 3) == "one, two"
    assert count_pieces(cut_pieces(text, 3)) == 3
