"""Parsing real files of every supported format, and the errors a user sees for bad ones."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from fpdf import FPDF

from ingestion.errors import EmptyDocumentError, IngestError, ParseError, UnsupportedFormatError
from ingestion.parsers import SUPPORTED_EXTENSIONS, Section, detect_format, parse

PAGE_ONE = "Lighthouses guided sailors along dangerous coasts for centuries."
PAGE_TWO = "A Fresnel lens bends light from a small lamp into a powerful beam."


def make_pdf(*pages: str, user_password: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner", user_password=user_password)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Field notes", level=1)
    document.add_paragraph("The   heron waited   motionless in the shallow water.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Species"
    table.cell(0, 1).text = "Count"
    table.cell(1, 0).text = "Grey heron"
    table.cell(1, 1).text = "3"
    document.add_paragraph("We left before the tide came in.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def only_text(sections: list[Section]) -> str:
    assert len(sections) == 1 and sections[0].page is None
    return sections[0].text


# ---------------------------------------------------------------------------------------------- formats


def test_pdf_has_one_section_per_page_with_page_numbers() -> None:
    sections = parse(make_pdf(PAGE_ONE, PAGE_TWO), "coasts.pdf")

    assert [s.page for s in sections] == [1, 2]
    assert PAGE_ONE in sections[0].text and PAGE_TWO not in sections[0].text
    assert PAGE_TWO in sections[1].text


def test_pdf_pages_without_text_are_skipped() -> None:
    sections = parse(make_pdf(PAGE_ONE, "", PAGE_TWO), "gap.pdf")

    assert [s.page for s in sections] == [1, 3]


def test_pdf_with_empty_user_password_opens() -> None:
    sections = parse(make_pdf(PAGE_ONE, user_password=""), "open.pdf")

    assert PAGE_ONE in sections[0].text


def test_docx_paragraphs_and_table_cells_in_order() -> None:
    text = only_text(parse(make_docx(), "notes.docx"))

    assert "The heron waited motionless in the shallow water." in text  # spaces collapsed
    assert "Species | Count\nGrey heron | 3" in text
    assert text.index("Field notes") < text.index("heron waited") < text.index("Species")
    assert text.index("Grey heron") < text.index("We left before the tide came in.")


def test_html_drops_script_style_and_page_furniture() -> None:
    html = b"""<!doctype html><html><head><title>Tide tables</title>
    <style>body { color: red }</style><script>var secret = "SCRIPT_TEXT";</script></head>
    <body><nav>NAV_TEXT</nav><header>HEADER_TEXT</header>
    <h1>High and low water</h1>
    <p>Tides rise and fall
       twice a day on most coasts.</p><!-- COMMENT_TEXT -->
    <p>The Moon's gravity is the main cause.</p>
    <footer>FOOTER_TEXT</footer><script>alert("SCRIPT_TEXT")</script></body></html>"""

    text = only_text(parse(html, "tides.HTML"))

    assert text.startswith("Tide tables\n\nHigh and low water\n\n")
    assert "Tides rise and fall twice a day on most coasts.\n\nThe Moon's gravity is the main cause." in text
    for hidden in ("SCRIPT_TEXT", "NAV_TEXT", "HEADER_TEXT", "FOOTER_TEXT", "COMMENT_TEXT", "color: red"):
        assert hidden not in text


def test_markdown_keeps_text_and_code_but_drops_markup() -> None:
    md = b"""# Brewing tea

Use **fresh** water and a [good kettle](https://example.com/kettle).

## Steps

- Warm the pot
- Steep for `3` minutes

```python
def steep(minutes: int) -> str:
    return "ready"
```
"""
    text = only_text(parse(md, "tea.md"))

    assert text.startswith("Brewing tea\n\nUse fresh water and a good kettle.\n\nSteps\n\n")
    assert "Warm the pot\nSteep for 3 minutes" in text
    assert 'def steep(minutes: int) -> str:\nreturn "ready"' in text
    for markup in ("#", "**", "](", "https://", "```", "- Warm"):
        assert markup not in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Café crème, naïve façade.\n".encode(), "Café crème, naïve façade."),
        ("Café crème, naïve façade.\n".encode("latin-1"), "Café crème, naïve façade."),
        ("\ufeffWith a byte order mark.".encode(), "With a byte order mark."),
        ("Saved as UTF-16 by Notepad.".encode("utf-16"), "Saved as UTF-16 by Notepad."),
    ],
    ids=["utf-8", "latin-1", "utf-8-bom", "utf-16"],
)
def test_text_encodings(data: bytes, expected: str) -> None:
    assert only_text(parse(data, "notes.txt")) == expected


def test_whitespace_is_normalised_but_paragraphs_kept() -> None:
    data = b"  First\tline   of text.  \r\nSecond line.\r\n\r\n\r\n\r\nNext   paragraph.\n\n"

    assert only_text(parse(data, "a.txt")) == "First line of text.\nSecond line.\n\nNext paragraph."


def test_detect_format_by_extension() -> None:
    assert detect_format("dir/Report.PDF", make_pdf(PAGE_ONE)) == "pdf"
    assert detect_format("notes.markdown", b"# hi") == "md"
    assert detect_format("page.htm", b"<p>hi</p>") == "html"
    assert detect_format("x.docx", make_docx()) == "docx"
    assert detect_format("x.txt", b"hello") == "txt"
    assert {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"} == SUPPORTED_EXTENSIONS


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_extension_names_the_extension_and_supported_list() -> None:
    with pytest.raises(UnsupportedFormatError) as info:
        parse(b"a,b\n1,2\n", "table.csv")

    message = str(info.value)
    assert "table.csv" in message and ".csv" in message and ".docx" in message and ".pdf" in message


def test_missing_extension_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="README"):
        parse(b"hello", "README")


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "error", "hint"),
    [
        ("junk.txt", bytes(range(256)) * 4, ParseError, "binary"),
        (
            "junk.md",
            b"\x01\x02\x03\x04\x05\x06\x07\x08 not text \x0e\x0f\x10\x11\x12\x13\x14",
            ParseError,
            "binary",
        ),
        ("photo.html", b"\x89PNG\r\n\x1a\n" + bytes(64), ParseError, "PNG"),
        ("fake.pdf", b"This is plain text pretending to be a PDF.", ParseError, "%PDF"),
        ("truncated.pdf", make_pdf(PAGE_ONE, PAGE_TWO)[:600], ParseError, "could not be read as PDF"),
        ("fake.docx", b"Plain text pretending to be a Word file.", ParseError, "not a .docx"),
        ("other.docx", _zip_bytes(), ParseError, "could not be read as a Word document"),
        ("locked.pdf", make_pdf(PAGE_ONE, user_password="s3cret"), ParseError, "encrypted"),
        ("empty.txt", b"", EmptyDocumentError, "contains no extractable text"),
        ("empty.pdf", b"", EmptyDocumentError, "contains no extractable text"),
        ("blank.txt", b"  \n\t\r\n   \n", EmptyDocumentError, "contains no extractable text"),
        ("blank.md", b"\n\n<!-- only a comment -->\n", EmptyDocumentError, "contains no extractable text"),
        (
            "scripts.html",
            b"<html><script>var a = 1;</script><style>p {}</style></html>",
            EmptyDocumentError,
            "",
        ),
        ("blank.pdf", make_pdf(""), EmptyDocumentError, "contains no extractable text"),
    ],
)
def test_bad_files_raise_an_error_naming_the_file(
    filename: str, data: bytes, error: type[IngestError], hint: str
) -> None:
    with pytest.raises(error) as info:
        parse(data, f"uploads/{filename}")

    message = str(info.value)
    assert filename in message and "uploads/" not in message
    assert hint in message
    assert "Traceback" not in message and "\n" not in message
