"""Real documents of each supported format, built in memory for the integration tests."""

from __future__ import annotations

import io
from pathlib import Path


def pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    doc = FPDF()
    doc.set_font("Helvetica", size=11)
    for text in pages:
        doc.add_page()
        doc.multi_cell(0, 6, text)
    path.write_bytes(bytes(doc.output()))
    return path


def docx(path: Path, paragraphs: list[str]) -> Path:
    import docx as python_docx

    document = python_docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def html(path: Path, title: str, body: str) -> Path:
    path.write_text(
        f"<html><head><title>{title}</title><style>p {{color: red}}</style>"
        f"<script>var tracking = 'do not index me';</script></head>"
        f"<body><nav>Home | About</nav><h1>{title}</h1><p>{body}</p></body></html>",
        encoding="utf-8",
    )
    return path


def markdown(path: Path, title: str, body: str) -> Path:
    path.write_text(f"# {title}\n\n{body}\n\n- a list item\n- another one\n", encoding="utf-8")
    return path
