"""Split parsed sections into token-bounded, overlapping chunks.

Sizes are measured by the caller's ``count_tokens`` (normally the embedder's own tokenizer), so this module
never loads a model. Each section is chunked on its own, so a chunk never spans two PDF pages and carries its
section's page. Guarantees: no empty chunks, ``count_tokens(chunk.context) + count_tokens(chunk.text) <=
chunk_tokens`` for every chunk, positions ``0..n-1`` in document order, and the same input always gives the
same chunks.

Context: a section is cut before each of its headings (``outline_parts``), so a chunk never runs from one
heading's text into the next, and every chunk carries the document's title and the path of headings above it
(outermost first, joined by " > ", a heading equal to the one before it left out), e.g. "Brewing tea >
Steps". It is embedded and indexed with the chunk (``retrieval.Chunk.indexed_text``) but not shown, so that
every chunk of a section is found by the words of its title, not only the first. The context takes at most a
quarter of the chunk's tokens (a longer one loses words at the end), and the chunk's text the rest.

How: ``semchunk`` splits each section, without overlap, into pieces of at most ``chunk_tokens -
overlap_tokens`` tokens at the most meaningful boundaries it finds (blank lines, line breaks, sentence ends,
clause punctuation, spaces). Every piece after the first is then prefixed with the longest run of whole words
before it that fits in ``overlap_tokens`` and keeps the chunk within budget (no overlap where not even one
word fits). A chunk wholly contained in the next (pieces shorter than the overlap) is dropped.

semchunk's own ``overlap=`` is not used: it builds chunks out of sub-chunks of ``min(overlap, chunk -
overlap)`` tokens, so a small overlap (or one close to the chunk size) makes sub-chunks of one or two
tokens that cut words apart, chunks come out well short of the budget, and the overlap is a whole sub-chunk
(an overlap of 40% of the chunk becomes 50%).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import semchunk

from ingestion.parsers import Heading, Section

logger = logging.getLogger(__name__)

MIN_CHUNK_TOKENS = 8
CONTEXT_SEPARATOR = " > "
_WORD_START = re.compile(r"(?<!\S)\S")


@dataclass(frozen=True)
class TextChunk:
    """One chunk of a document: its text, its 0-based position in the document, its page (if any) and its
    context (title and headings, not part of ``text``)."""

    text: str
    position: int
    page: int | None
    context: str = ""


def chunk_sections(
    sections: Sequence[Section],
    *,
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[TextChunk]:
    """Chunk every section; each chunk repeats up to ``overlap_tokens`` tokens from the end of the last one.

    Overlap never crosses sections or headings. Raises ``ValueError`` unless ``chunk_tokens >= 8`` and
    ``0 <= overlap_tokens < chunk_tokens``.
    """
    _validate(chunk_tokens, overlap_tokens)
    # A cache per call: semchunk's own memoisation (memoize=True) keeps every token counter it has seen, with
    # an unbounded cache of every text it counted, in a module-level dict for the life of the process.
    counter = functools.lru_cache(maxsize=65536)(count_tokens)
    chunkers: dict[int, Callable[..., object]] = {}
    context_cap = max(0, min(chunk_tokens // 4, chunk_tokens - max(MIN_CHUNK_TOKENS, overlap_tokens + 1)))

    chunks: list[TextChunk] = []
    for section in sections:
        for part, raw_context in outline_parts(section):
            context = _fit(raw_context, counter, context_cap)
            budget = chunk_tokens - counter(context)
            if budget not in chunkers:
                chunkers[budget] = semchunk.chunkerify(counter, budget - overlap_tokens, memoize=False)
            _, offsets = cast(tuple[list[str], list[tuple[int, int]]], chunkers[budget](part, offsets=True))
            for start, end in _with_overlap(part, offsets, counter, budget, overlap_tokens):
                text = part[start:end].strip()
                if text:
                    chunks.append(TextChunk(text, position=len(chunks), page=section.page, context=context))
    logger.debug(
        "chunked %d section(s) into %d chunk(s) of at most %d tokens (overlap %d)",
        len(sections),
        len(chunks),
        chunk_tokens,
        overlap_tokens,
    )
    return chunks


def outline_parts(section: Section) -> list[tuple[str, str]]:
    """The section cut before each heading, as (text, context) pairs; a heading with no text of its own
    before the next one stays with the next part (whose context it then leads to)."""
    bounds = [(0, _join(section.title, []), "")]
    path: list[Heading] = []
    for heading in section.headings:
        while path and path[-1].level >= heading.level:
            path.pop()
        path.append(heading)
        bounds.append((heading.offset, _join(section.title, path), heading.text))
    parts: list[tuple[str, str]] = []
    start: int | None = None  # of a heading-only part carried into the next
    for i, (offset, context, line) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(section.text)
        begin = offset if start is None else start
        body = section.text[offset:end].strip()
        if line and body == line and end < len(section.text):
            start = begin
            continue
        start = None
        if section.text[begin:end].strip():
            parts.append((section.text[begin:end], context))
    return parts


def _join(title: str, path: Sequence[Heading]) -> str:
    parts = [title] if title else []
    for heading in path:
        if not parts or parts[-1].casefold() != heading.text.casefold():
            parts.append(heading.text)
    return CONTEXT_SEPARATOR.join(parts)


def _fit(context: str, counter: Callable[[str], int], cap: int) -> str:
    """``context``, or as many of its first words as fit in ``cap`` tokens."""
    if counter(context) <= cap:
        return context
    words = context.split()
    low, high = 0, len(words)  # the most words that fit: fitting is monotone in the number of words
    while low < high:
        mid = (low + high + 1) // 2
        if counter(" ".join(words[:mid])) <= cap:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low]).removesuffix(CONTEXT_SEPARATOR.rstrip()).rstrip()


def _validate(chunk_tokens: int, overlap_tokens: int) -> None:
    for label, value in (("chunk_tokens", chunk_tokens), ("overlap_tokens", overlap_tokens)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{label} must be an integer number of tokens, got {value!r}")
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens must be at least {MIN_CHUNK_TOKENS}, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be >= 0 and less than chunk_tokens ({chunk_tokens}), got {overlap_tokens}"
        )


def _with_overlap(
    text: str,
    offsets: Sequence[tuple[int, int]],
    counter: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[tuple[int, int]]:
    """Move each piece's start back over the words before it, as far as both budgets allow.

    A chunk that ends up wholly inside the next one (pieces shorter than the overlap) is dropped.
    """
    if not overlap_tokens:
        return list(offsets)
    spans: list[tuple[int, int]] = []
    for i, (start, end) in enumerate(offsets):
        first, behind = i, 0  # the earliest piece the tail may reach into
        while first > 0 and behind < overlap_tokens:
            first -= 1
            behind += counter(text[offsets[first][0] : offsets[first][1]])
        if first < i:
            start = _tail_start(text, offsets[first][0], start, end, counter, chunk_tokens, overlap_tokens)
        while spans and spans[-1][0] >= start:
            spans.pop()
        spans.append((start, end))
    return spans


def _tail_start(
    text: str,
    region_start: int,
    start: int,
    end: int,
    counter: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> int:
    """The earliest word start in ``text[region_start:start]`` whose tail fits both budgets, else ``start``.

    Dropping leading words does not add tokens, so the candidates that fit form a suffix: binary-search it.
    (Should a tokenizer break that, the result still fits: only a candidate that was checked is returned.)
    """
    candidates = [m.start() for m in _WORD_START.finditer(text, region_start, start)]

    def fits(i: int) -> bool:
        tail_start = candidates[i]
        return (
            counter(text[tail_start:start]) <= overlap_tokens
            and counter(text[tail_start:end]) <= chunk_tokens
        )

    low, high = 0, len(candidates)  # find the first index that fits; len(candidates) means none does
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return candidates[low] if low < len(candidates) else start
