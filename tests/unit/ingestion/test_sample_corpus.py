"""The bundled sample corpus (api/sample) parses, file by file, into real text."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from ingestion.parsers import SUPPORTED_EXTENSIONS, parse

SAMPLE_DIR = Path(str(resources.files("api") / "sample"))
SAMPLE_FILES = sorted(path for path in SAMPLE_DIR.iterdir() if path.is_file())


def test_corpus_has_every_format() -> None:
    suffixes = {path.suffix for path in SAMPLE_FILES}

    assert 8 <= len(SAMPLE_FILES) <= 10
    assert {".md", ".txt", ".html", ".pdf", ".docx"} <= suffixes <= SUPPORTED_EXTENSIONS


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[path.name for path in SAMPLE_FILES])
def test_sample_file_parses_into_at_least_100_words(path: Path) -> None:
    sections = parse(path.read_bytes(), path.name)

    words = " ".join(section.text for section in sections).split()
    assert len(words) >= 100
    assert not {"<p>", "<script>", "```", "**", "##"} & set(words)  # markup did not leak into the text
