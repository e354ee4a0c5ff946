"""Hostile documents, made in memory and small on disk: a .docx zip bomb, one of too many members, and HTML
nested too deep. The unit tests of the parse limits, the integration tests and the bomb benchmark share them.
"""

from __future__ import annotations

import io
import zipfile

_CHUNK = 1 << 20


def _docx_parts() -> dict[str, bytes]:
    import docx

    document = docx.Document()
    document.add_paragraph("A harmless looking report about the quarterly figures.")
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def docx_bomb(unpacked_mib: int = 400) -> bytes:
    """A real .docx whose ``word/document.xml`` holds ``unpacked_mib`` MiB of blank space between two
    paragraphs (valid XML): about 1,000 times smaller compressed (400 MiB: ~0.4 MB)."""
    parts = _docx_parts()
    body = parts.pop("word/document.xml")
    cut = body.index(b"</w:body>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(body[:cut])
            blank = b" " * _CHUNK
            for _ in range(unpacked_mib):
                member.write(blank)
            member.write(body[cut:])
    return buffer.getvalue()


def docx_with_members(count: int) -> bytes:
    """A real .docx with ``count`` extra empty members (a zip of many small files)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in _docx_parts().items():
            archive.writestr(name, data)
        for i in range(count):
            archive.writestr(f"word/extra/part{i}.xml", b"")
    return buffer.getvalue()


def nested_divs(depth: int = 100_000, text: str = "deep") -> bytes:
    """HTML whose body nests ``depth`` ``<div>`` elements (100,000: 1.1 MB)."""
    return b"<html><body>" + b"<div>" * depth + text.encode() + b"</div>" * depth + b"</body></html>"
