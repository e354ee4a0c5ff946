"""Documents and hostile payloads, built in memory and reproducibly (a seeded RNG).

Every document of tenant ``x`` carries a marker word ``zq<x>NNNNN<salt>`` that appears in no other document,
so that a search finds it by BM25 and a response that leaks it to another tenant is recognised.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

WORDS = [
    "river",
    "mountain",
    "harbour",
    "lantern",
    "copper",
    "meadow",
    "glacier",
    "orchard",
    "compass",
    "ember",
    "falcon",
    "granite",
    "hollow",
    "island",
    "juniper",
    "kettle",
    "ledger",
    "marble",
    "nectar",
    "oyster",
    "pepper",
    "quarry",
    "ribbon",
    "saddle",
    "timber",
    "umbrella",
    "valley",
    "willow",
    "yarrow",
    "zephyr",
    "anchor",
    "basalt",
    "cedar",
    "delta",
    "estuary",
    "fjord",
    "grotto",
    "heron",
    "inlet",
    "jetty",
    "kelp",
    "lagoon",
    "moraine",
    "nebula",
    "obsidian",
    "prairie",
    "quartz",
    "reef",
    "savanna",
    "tundra",
    "upland",
    "volcano",
    "wetland",
    "atoll",
    "bramble",
    "canyon",
    "dune",
    "escarpment",
    "foothill",
    "geyser",
    "headland",
    "isthmus",
    "knoll",
    "loess",
    "mesa",
    "oasis",
    "plateau",
    "ravine",
    "steppe",
    "tor",
    "acorn",
    "beacon",
    "cobalt",
    "dynamo",
    "engine",
    "filament",
    "gasket",
    "hinge",
    "ingot",
    "joist",
    "kiln",
    "lathe",
    "magnet",
    "nozzle",
    "piston",
    "rivet",
    "sprocket",
    "turbine",
    "valve",
    "winch",
    "bearing",
    "cable",
    "drill",
    "forge",
    "gauge",
    "hammer",
]


@dataclass(frozen=True)
class Doc:
    """One upload: a file name, its bytes, the document id and metadata sent with it, its marker word."""

    name: str
    data: bytes
    document_id: str
    marker: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _paragraph(rng: random.Random, marker: str | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(45, 70))]
    if marker:
        words.insert(rng.randint(0, len(words)), marker)
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def corpus(tag: str, count: int, *, seed: int = 12, large_every: int = 10) -> list[Doc]:
    """``count`` documents of mixed formats (md, txt, html, docx) and sizes: most of 1-4 paragraphs (one or
    two chunks), every ``large_every``-th of 40-80 paragraphs (tens of chunks, so that a worker is killed
    while it embeds one)."""
    rng = random.Random(f"{seed}-{tag}")
    docs = []
    for index in range(count):
        salt = "".join(rng.choice("bcdfghjkmnpqrstvwxz") for _ in range(4))
        marker = f"zq{tag}{index:05d}{salt}"
        paragraphs = (
            rng.randint(40, 80)
            if large_every and index % large_every == large_every - 1
            else rng.randint(1, 4)
        )
        body = [_paragraph(rng, marker if i == 0 else None) for i in range(paragraphs)]
        kind = ("md", "md", "md", "md", "md", "md", "txt", "txt", "html", "docx")[index % 10]
        document_id = f"{tag}-{index:05d}-{kind}"
        name = f"{document_id}.{kind}"
        docs.append(
            Doc(name, render(kind, f"Report {index}", body), document_id, marker, {"batch": tag, "n": index})
        )
    return docs


def render(kind: str, title: str, paragraphs: list[str]) -> bytes:
    if kind == "md":
        return (f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n").encode()
    if kind == "txt":
        return (title + "\n\n" + "\n\n".join(paragraphs) + "\n").encode()
    if kind == "html":
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>".encode()
    if kind == "docx":
        import docx

        document = docx.Document()
        document.add_heading(title, level=1)
        for text in paragraphs:
            document.add_paragraph(text)
        buffer = io.BytesIO()
        document.save(buffer)
        return buffer.getvalue()
    raise ValueError(kind)


# -- hostile files --------------------------------------------------------------------------------------
def _docx_with(document_xml: bytes | None = None, *, big_mib: int = 0) -> bytes:
    """A real .docx (python-docx's template) whose ``word/document.xml`` is replaced: by ``document_xml``,
    or by ``big_mib`` MiB of repeated paragraphs streamed into the archive (a zip bomb)."""
    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                target.writestr(info, source.read(info.filename))
                continue
            if document_xml is not None:
                target.writestr("word/document.xml", document_xml)
                continue
            head = (
                b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document '
                b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
            )
            para = b"<w:p><w:r><w:t>" + b"bomb " * 200 + b"</w:t></w:r></w:p>"
            block = para * (1024 * 1024 // len(para))  # whole paragraphs, about 1 MiB
            with target.open("word/document.xml", "w", force_zip64=True) as member:
                member.write(head)
                for _ in range(big_mib * 1024 * 1024 // len(block)):
                    member.write(block)
                member.write(b"</w:body></w:document>")
    return out.getvalue()


def zip_bomb_docx(mib: int) -> bytes:
    """A .docx of a few hundred KiB whose document.xml inflates to ``mib`` MiB (under the 512 MiB cap)."""
    return _docx_with(big_mib=mib)


def many_member_docx(members: int, member_kib: int) -> bytes:
    """A .docx carrying ``members`` extra parts of zeros (``members * member_kib`` KiB once inflated)."""
    base = zipfile.ZipFile(
        io.BytesIO(
            _docx_with(
                b'<?xml version="1.0"?><w:document xmlns:w="http://'
                b'schemas.openxmlformats.org/wordprocessingml/2006/main">'
                b"<w:body><w:p><w:r><w:t>spare</w:t></w:r></w:p></w:body>"
                b"</w:document>"
            )
        )
    )
    out = io.BytesIO()
    zeros = bytes(member_kib * 1024)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in base.infolist():
            target.writestr(info, base.read(info.filename))
        for index in range(members):
            target.writestr(f"word/media/pad{index}.bin", zeros)
    return out.getvalue()


BILLION_LAUGHS_ENTITIES = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + "]>"
)


def billion_laughs_docx() -> bytes:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>' + BILLION_LAUGHS_ENTITIES + '<w:document xmlns:w="http://'
        'schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r>'
        "</w:p></w:body></w:document>"
    )
    return _docx_with(xml.encode())


def billion_laughs_html() -> bytes:
    return (
        '<?xml version="1.0"?>' + BILLION_LAUGHS_ENTITIES + "<html><body><p>&lol9;</p></body></html>"
    ).encode()


def nested_html(depth: int = 100_000) -> bytes:
    """``depth`` nested ``<div>``s around one word (about 1.1 MB at 100,000)."""
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"


def nested_markdown(depth: int = 100_000) -> bytes:
    return b"> " * depth + b"deep\n\n" + b"- " * 20_000 + b"list\n\n" + b"[" * 50_000 + b"x" + b"]" * 50_000


def pdf_flate_bomb(mib: int) -> bytes:
    """A one-page PDF whose content stream inflates to ``mib`` MiB of text-drawing operators."""
    unit = b"BT /F1 12 Tf 72 720 Td (bomb bomb bomb bomb) Tj ET\n"
    raw = unit * (mib * 1024 * 1024 // len(unit))
    stream = zlib.compress(raw, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length "
        + str(len(stream)).encode()
        + b" /Filter /FlateDecode >>\nstream\n"
        + stream
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


@dataclass(frozen=True)
class Bomb:
    name: str
    data: bytes
    what: str
    may_succeed: bool = False  # harmless once contained (entities not expanded): `done` is fine too


def bombs(zip_mib: int, *, full: bool) -> list[Bomb]:
    out = [
        Bomb("bomb.docx", zip_bomb_docx(zip_mib), f".docx inflating to {zip_mib} MiB"),
        Bomb("nested.html", nested_html(), "100,000 nested <div>s"),
        Bomb("laughs.docx", billion_laughs_docx(), "billion laughs in document.xml", may_succeed=True),
        Bomb("laughs.html", billion_laughs_html(), "billion laughs in HTML", may_succeed=True),
    ]
    if full:
        out += [
            Bomb("members.docx", many_member_docx(2000, 200), ".docx of 2,000 parts (390 MiB of zeros)"),
            Bomb("nested.md", nested_markdown(), "100,000 nested blockquotes", may_succeed=True),
            Bomb(
                "flate.pdf",
                pdf_flate_bomb(min(zip_mib, 256)),
                f"PDF stream inflating to {min(zip_mib, 256)} MiB",
            ),
        ]
    return out
