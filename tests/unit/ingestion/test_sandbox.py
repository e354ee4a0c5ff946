"""Parsing in a child process with time and memory limits, and the parse limits of zip and markup formats.

The hostile inputs are real documents made in memory (``tests.support.bombs``); a parse past a limit fails
with ``ParseLimitError`` whose message names the limit and its setting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.errors import EmptyDocumentError, ParseError, ParseLimitError
from ingestion.parsers import ParseLimits, parse
from ingestion.sandbox import SandboxLimits, limits_from, parse_file
from ingestion.settings import IngestSettings
from tests.support import bombs

NO_PARSE_LIMITS = ParseLimits(docx_max_unpacked_bytes=1 << 40, docx_max_members=10**6, markup_max_depth=10**7)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_parse_in_the_sandbox_returns_what_an_in_process_parse_does(tmp_path: Path) -> None:
    html = b"<html><head><title>Kites</title></head><body><p>Kites fly on a steady wind.</p></body></html>"
    path = write(tmp_path, "kites.html", html)
    assert parse_file(path, "kites.html", ParseLimits(), SandboxLimits()) == parse(html, "kites.html")


def test_the_parsers_own_errors_come_back_as_themselves(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.pdf", b"%PDF-1.7\n" + b"\x00garbage" * 50)
    with pytest.raises(ParseError, match="broken.pdf") as caught:
        parse_file(broken, "broken.pdf", ParseLimits(), SandboxLimits())
    assert not isinstance(caught.value, ParseLimitError)
    blank = write(tmp_path, "blank.md", b"   \n\n  ")
    with pytest.raises(EmptyDocumentError, match="blank.md"):
        parse_file(blank, "blank.md", ParseLimits(), SandboxLimits())


def test_a_parse_that_runs_past_its_cpu_time_is_stopped_naming_the_limit(tmp_path: Path) -> None:
    # 20,000 nested elements take BeautifulSoup minutes of CPU once the depth limit is out of the way
    path = write(tmp_path, "deep.html", bombs.nested_divs(20_000))
    with pytest.raises(ParseLimitError, match=r"exceeded 1 s CPU time \(INGEST_PARSE_CPU_S\)"):
        parse_file(path, "deep.html", NO_PARSE_LIMITS, SandboxLimits(wall_s=600, cpu_s=1))


def test_a_parse_that_runs_past_its_wall_time_is_stopped_naming_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "deep.html", bombs.nested_divs(20_000))
    with pytest.raises(ParseLimitError, match=r"exceeded 1 s wall time \(INGEST_PARSE_TIMEOUT_S\)"):
        parse_file(path, "deep.html", NO_PARSE_LIMITS, SandboxLimits(wall_s=1, cpu_s=600))


def test_a_parse_that_allocates_past_its_memory_is_stopped_naming_the_limit(tmp_path: Path) -> None:
    # with the unpacked-size cap out of the way, python-docx inflates all 200 MiB of document.xml
    path = write(tmp_path, "bomb.docx", bombs.docx_bomb(200))
    limit = SandboxLimits(memory_bytes=160 * 2**20)
    with pytest.raises(ParseLimitError, match=r"exceeded 160 MiB of memory \(INGEST_PARSE_MEMORY_MB\)"):
        parse_file(path, "bomb.docx", NO_PARSE_LIMITS, limit)


def test_a_docx_zip_bomb_fails_on_its_unpacked_size_before_anything_is_inflated(tmp_path: Path) -> None:
    bomb = bombs.docx_bomb(400)
    assert len(bomb) < 2_000_000  # 400 MiB once unpacked
    with pytest.raises(ParseLimitError, match=r"unpacks to 40\d MiB; the limit is 64 MiB \(INGEST_DOCX_MAX_"):
        parse(bomb, "bomb.docx")
    path = write(tmp_path, "bomb.docx", bomb)
    with pytest.raises(ParseLimitError, match="INGEST_DOCX_MAX_UNPACKED_MB"):
        parse_file(path, "bomb.docx", ParseLimits(), SandboxLimits())
    assert parse(bombs.docx_bomb(1), "small.docx")[0].text.startswith("A harmless looking report")


def test_a_docx_of_too_many_members_fails_naming_the_limit() -> None:
    with pytest.raises(
        ParseLimitError, match=r"holds 1\d\d\d files; the limit is 1000 \(INGEST_DOCX_MAX_MEMBERS\)"
    ):
        parse(bombs.docx_with_members(1000), "many.docx")


def test_html_nested_past_the_depth_limit_fails_at_once_naming_the_limit() -> None:
    with pytest.raises(ParseLimitError, match=r"more than 256 levels deep \(INGEST_MARKUP_MAX_DEPTH\)"):
        parse(bombs.nested_divs(100_000), "deep.html")
    assert parse(bombs.nested_divs(200), "fine.html")[0].text == "deep"
    with pytest.raises(ParseLimitError, match="more than 50 levels"):
        parse(bombs.nested_divs(60), "deep.html", ParseLimits(markup_max_depth=50))


def test_html_inside_markdown_has_the_same_depth_limit() -> None:
    markdown = b"# Title\n\n" + bombs.nested_divs(1_000).removeprefix(b"<html><body>") + b"\n"
    with pytest.raises(ParseLimitError, match="INGEST_MARKUP_MAX_DEPTH"):
        parse(markdown, "deep.md")


def test_the_limits_come_from_the_ingest_settings() -> None:
    settings = IngestSettings(
        parse_timeout_s=7, parse_cpu_s=5, parse_memory_mb=300, docx_max_unpacked_mb=2, markup_max_depth=9
    )
    parse_limits, sandbox = limits_from(settings)
    assert sandbox == SandboxLimits(wall_s=7, cpu_s=5, memory_bytes=300 * 2**20)
    assert parse_limits.docx_max_unpacked_bytes == 2 * 2**20 and parse_limits.markup_max_depth == 9
    assert limits_from(settings.model_copy(update={"parse_sandbox": False}))[1] is None
