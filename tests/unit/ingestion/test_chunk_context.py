"""Chunks carry their context: the document's title and the headings above them, embedded and indexed with
the chunk but kept out of the passage shown."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import docx
import numpy as np

from ingestion.chunking import chunk_sections
from ingestion.parsers import Heading, Section, parse
from ingestion.pipeline import write_chunks
from retrieval import Chunk
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder


def count_words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def words(n: int, word: str) -> str:
    return " ".join(f"{word}{i}" for i in range(n))


MARKDOWN = f"""# Brewing tea

{words(30, "intro")}

## Steps

{words(30, "step")}

### Steeping

{words(30, "steep")}

## Serving

{words(30, "serve")}
""".encode()


def contexts(sections: Sequence[Section], chunk_tokens: int = 40) -> dict[str, str]:
    """Each word -> the context of the chunk that shows it."""
    chunks = chunk_sections(sections, count_tokens=count_words, chunk_tokens=chunk_tokens, overlap_tokens=0)
    return {word: chunk.context for chunk in chunks for word in chunk.text.split()}


def test_markdown_headings_are_located_in_the_text() -> None:
    (section,) = parse(MARKDOWN, "tea.md")

    assert [(h.level, h.text) for h in section.headings] == [
        (1, "Brewing tea"),
        (2, "Steps"),
        (3, "Steeping"),
        (2, "Serving"),
    ]
    assert all(section.text[h.offset :].startswith(h.text + "\n") for h in section.headings)


def test_every_chunk_carries_the_heading_path_in_force_where_it_begins() -> None:
    found = contexts(parse(MARKDOWN, "tea.md"))

    assert found["Brewing"] == "Brewing tea"
    assert found["intro29"] == "Brewing tea"  # not only the chunk that shows the heading
    assert found["Steps"] == found["step29"] == "Brewing tea > Steps"
    assert found["Steeping"] == found["steep29"] == "Brewing tea > Steps > Steeping"
    assert found["Serving"] == found["serve29"] == "Brewing tea > Serving"  # a level-2 heading ends level 3


def test_html_title_and_headings() -> None:
    html = f"""<html><head><title>Tide tables</title></head><body>
    <h1>Tide tables</h1><p>{words(30, "intro")}</p>
    <h2>Spring tides</h2><p>{words(30, "spring")}</p></body></html>""".encode()

    (section,) = parse(html, "tides.html")
    found = contexts([section])

    assert section.title == "Tide tables"
    assert found["intro29"] == "Tide tables"  # the h1 equal to the title is not repeated
    assert found["spring29"] == "Tide tables > Spring tides"


def test_docx_title_and_heading_paragraphs() -> None:
    document = docx.Document()
    document.core_properties.title = "Field notes"
    document.add_heading("Herons", level=1)
    document.add_paragraph(words(30, "heron"))
    document.add_heading("Egrets", level=1)
    document.add_paragraph(words(30, "egret"))
    buffer = io.BytesIO()
    document.save(buffer)

    (section,) = parse(buffer.getvalue(), "notes.docx")
    found = contexts([section])

    assert section.title == "Field notes"
    assert found["heron29"] == "Field notes > Herons"
    assert found["egret29"] == "Field notes > Egrets"


def test_plain_text_has_no_context() -> None:
    (section,) = parse(words(50, "plain").encode(), "notes.txt")

    assert set(contexts([section]).values()) == {""}


def test_context_and_text_together_stay_within_the_chunk_budget() -> None:
    long_title = words(40, "title")  # longer than a quarter of the chunk: cut to its first words
    section = Section(words(200, "body"), title=long_title, headings=(Heading(0, 1, "Heading"),))

    chunks = chunk_sections([section], count_tokens=count_words, chunk_tokens=32, overlap_tokens=4)

    assert chunks and all(count_words(c.context) + count_words(c.text) <= 32 for c in chunks)
    assert all(c.context == words(8, "title") for c in chunks)  # 32 // 4 words, the title's first
    assert all(not c.text.startswith("title") for c in chunks)  # the context is not in the passage


def test_the_embedder_reads_the_context_and_the_store_shows_the_passage() -> None:
    class Recording(HashEmbedder):
        seen: list[str] = []

        def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
            self.seen.extend(texts)
            return super().embed_documents(texts)

    embedder, store = Recording(), InMemoryStore()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    chunk = Chunk(
        tenant="t", document_id="d", version="v", position=0, text="Warm the pot.", context="Tea > Steps"
    )

    write_chunks([chunk], store=store, embedder=embedder, batch=8)

    assert embedder.seen == ["Tea > Steps\n\nWarm the pot."]
    (hit,) = store.search("t", embedder.embed_queries(["tea"])[0], limit=1)
    assert hit.text == "Warm the pot."


def test_a_heading_without_text_of_its_own_stays_with_the_next_part() -> None:
    md = f"# Tea\n\n## Steps\n\n### Steeping\n\n{words(10, 'steep')}\n".encode()

    chunks = chunk_sections(parse(md, "tea.md"), count_tokens=count_words, chunk_tokens=64, overlap_tokens=0)

    assert [(c.context, c.text.split("\n\n")[0]) for c in chunks] == [("Tea > Steps > Steeping", "Tea")]
