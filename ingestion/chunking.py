"""Split parsed sections into token-bounded, overlapping chunks (with ``semchunk``).

Sizes are measured by the caller's ``count_tokens`` (normally the embedder's own tokenizer), so this module
never loads a model. Each section is chunked on its own, so a chunk never spans two PDF pages and carries its
section's page. Guarantees: no empty chunks, ``count_tokens(chunk.text) <= chunk_tokens`` for every chunk,
positions ``0..n-1`` in document order, and the same input always gives the same chunks.

How ``semchunk`` overlaps: it first splits the text into sub-chunks of ``min(overlap, chunk - overlap)``
tokens at the most meaningful boundaries it can find (blank lines, line breaks, sentence ends, clause
punctuation, spaces), then joins ``chunk // sub`` consecutive sub-chunks into each chunk with a stride of
``(chunk - overlap) // sub``. So consecutive chunks share whole sub-chunks (roughly ``overlap`` tokens), and
a chunk may be somewhat shorter than ``chunk_tokens``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import semchunk

from ingestion.parsers import Section

logger = logging.getLogger(__name__)

MIN_CHUNK_TOKENS = 8


@dataclass(frozen=True)
class TextChunk:
    """One chunk of a document: its text, its 0-based position in the document, and its page (if any)."""

    text: str
    position: int
    page: int | None


def chunk_sections(
    sections: Sequence[Section],
    *,
    count_tokens: Callable[[str], int],
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[TextChunk]:
    """Chunk every section; consecutive chunks of one section share about ``overlap_tokens`` tokens.

    Raises ``ValueError`` unless ``chunk_tokens >= 8`` and ``0 <= overlap_tokens < chunk_tokens``.
    """
    _validate(chunk_tokens, overlap_tokens)
    # A cache per call: semchunk's own memoisation (memoize=True) keeps every token counter it has seen,
    # and an unbounded cache of every text counted, in a module-level dict for the life of the process.
    counter = functools.lru_cache(maxsize=65536)(count_tokens)
    chunker = semchunk.chunkerify(counter, chunk_tokens, memoize=False)

    chunks: list[TextChunk] = []
    for section in sections:
        if not section.text.strip():
            continue
        # semchunk reads an overlap below 1 as a fraction of the chunk size; ours is always whole tokens.
        pieces = cast(list[str], chunker(section.text, overlap=overlap_tokens or None))
        for piece in pieces:
            for text in _within_budget(piece, chunker, counter, chunk_tokens):
                chunks.append(TextChunk(text=text, position=len(chunks), page=section.page))
    logger.debug(
        "chunked %d section(s) into %d chunk(s) of at most %d tokens (overlap %d)",
        len(sections),
        len(chunks),
        chunk_tokens,
        overlap_tokens,
    )
    return chunks


def _validate(chunk_tokens: int, overlap_tokens: int) -> None:
    for label, value in (("chunk_tokens", chunk_tokens), ("overlap_tokens", overlap_tokens)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{label} must be an integer number of tokens, got {value!r}")
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens must be at least {MIN_CHUNK_TOKENS}, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be at least 0 and less than chunk_tokens ({chunk_tokens}), got {overlap_tokens}"
        )


def _within_budget(
    piece: str, chunker: semchunk.Chunker, counter: Callable[[str], int], chunk_tokens: int
) -> list[str]:
    """``piece`` stripped, or re-split without overlap in the rare case joining sub-chunks overshot.

    semchunk sizes sub-chunks exactly, but a tokenizer need not be additive: the joined text of several
    sub-chunks can count a few tokens more than their sum (e.g. where a word was split between two).
    """
    text = piece.strip()
    if not text:
        return []
    if counter(text) <= chunk_tokens:
        return [text]
    logger.debug("an overlapped chunk counted %d > %d tokens; re-splitting it", counter(text), chunk_tokens)
    return [part.strip() for part in cast(list[str], chunker(text)) if part.strip()]
