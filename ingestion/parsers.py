"""Turn an uploaded file's bytes into plain-text sections.

``detect_format`` picks the parser from the file name's extension and cross-checks it against the bytes;
``parse`` extracts text: one ``Section`` per page for PDF, one for every other format. Text is normalised
(runs of spaces collapsed, paragraphs separated by a blank line). Where the format says so, a section also
carries the document's title (HTML ``<title>``, the .docx title property or "Title" paragraph) and its
headings (Markdown ``#``, HTML ``<h1>``-``<h6>``, .docx "Heading N" paragraphs) with their offsets in the
text, from which chunking gives every chunk its context. Failures raise ``ingestion.errors``:
``UnsupportedFormatError`` (unknown extension), ``ParseError`` (corrupt, encrypted, binary, mislabelled) or
``EmptyDocumentError`` (no text), each with a message that names the file and can be shown to its owner.

``ParseLimits`` bound what one file may cost: a .docx's total unpacked size and member count (checked from
the zip's directory before anything is inflated; Python's zipfile never inflates a member past its declared
size) and the element nesting of HTML (checked by a streaming pass of the same lxml parser before the tree is
built). Passing one raises ``ParseLimitError``. Time and memory are bounded by running the parse in a child
process (``ingestion.sandbox``).
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ingestion.errors import EmptyDocumentError, ParseError, ParseLimitError, UnsupportedFormatError

logger = logging.getLogger(__name__)

_FORMATS = {".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}
_FORMATS |= {".pdf": "pdf", ".docx": "docx"}
SUPPORTED_EXTENSIONS = frozenset(_FORMATS)

_MAX_CONTROL_RATIO = 0.02  # share of control characters above which "text" is taken to be binary
_BINARY_SIGNATURES = {
    b"%PDF-": "a PDF",
    b"PK\x03\x04": "a ZIP archive (e.g. .docx)",
    b"\xd0\xcf\x11\xe0": "an old Office (.doc/.xls) file",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
}
_HTML_DROP = ["script", "style", "nav", "header", "footer", "noscript", "template", "svg", "iframe", "head"]
_HTML_BLOCKS = ["p", "div", "section", "article", "main", "aside", "blockquote", "pre", "figure"]
_HTML_BLOCKS += ["figcaption", "address", "form", "fieldset", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol"]
_HTML_BLOCKS += ["dl", "table", "caption", "hr", "details", "summary"]
_HTML_LINES = ["li", "dt", "dd"]  # one line each inside their (block) list
_HTML_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_DOCX_HEADING = re.compile(r"heading (\d)")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_LINE_BREAK = re.compile("\r\n|[\r\v\f\u2028\x1c-\x1e\x85]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What parsing one file may unpack and nest (``INGEST_DOCX_MAX_UNPACKED_MB``,
    ``INGEST_DOCX_MAX_MEMBERS``, ``INGEST_MARKUP_MAX_DEPTH``)."""

    docx_max_unpacked_bytes: int = 64 * 1024 * 1024
    docx_max_members: int = 1000
    markup_max_depth: int = 256


@dataclass(frozen=True)
class Heading:
    """A heading line of a section: its start in ``Section.text``, its level (1 = outermost) and its text."""

    offset: int
    level: int
    text: str


@dataclass(frozen=True)
class Section:
    """A run of document text; ``page`` is the 1-based page number where the format has pages (PDF);
    ``title`` the document's title and ``headings`` the section's headings in order, where known."""

    text: str
    page: int | None = None
    title: str = ""
    headings: tuple[Heading, ...] = ()


Parser = Callable[[bytes, str, ParseLimits], list[Section]]


def detect_format(filename: str, data: bytes) -> str:
    """The parser for ``filename``: one of ``"txt"``, ``"md"``, ``"html"``, ``"pdf"``, ``"docx"``.

    The extension decides; the bytes must agree with it (a ``.pdf`` starts with ``%PDF``, a ``.docx`` is a
    ZIP archive, text formats are not binary). An empty file raises ``EmptyDocumentError``.
    """
    name = _display_name(filename)
    fmt = _format_for_extension(filename)
    if not data:
        raise EmptyDocumentError(f"{name} contains no extractable text (the file is empty)")
    if fmt == "pdf":
        if b"%PDF-" not in data[:1024]:
            raise ParseError(f"{name} is not a PDF file (it does not start with %PDF)")
    elif fmt == "docx":
        if not data.startswith(b"PK\x03\x04"):
            hint = (
                " (old binary .doc files are not supported)" if data.startswith(b"\xd0\xcf\x11\xe0") else ""
            )
            raise ParseError(f"{name} is not a .docx file (Word 2007+ documents are ZIP archives){hint}")
    else:
        _decode_text(data, name)
    return fmt


def parse(data: bytes, filename: str, limits: ParseLimits | None = None) -> list[Section]:
    """Extract the text of a file, in reading order. Never returns an empty list."""
    name = _display_name(filename)
    fmt = detect_format(filename, data)
    parser: Parser = _PARSERS[fmt]
    sections = [s for s in parser(data, name, limits or ParseLimits()) if s.text]
    if not sections:
        raise EmptyDocumentError(f"{name} contains no extractable text")
    logger.debug("parsed %s as %s: %d section(s)", name, fmt, len(sections))
    return sections


# ---------------------------------------------------------------------------------------------- helpers


def _display_name(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1] or "the file"


def _format_for_extension(filename: str) -> str:
    suffix = PurePosixPath(_display_name(filename)).suffix.lower()
    if suffix not in _FORMATS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        what = f"files of type {suffix!r}" if suffix else "files without an extension"
        raise UnsupportedFormatError(
            f"{_display_name(filename)}: {what} are not supported (supported: {supported})"
        )
    return _FORMATS[suffix]


def _short_reason(exc: BaseException) -> str:
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = message.strip().splitlines()
    reason = lines[0] if lines else ""
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    return reason or type(exc).__name__


def _normalise(text: str) -> str:
    """Collapse runs of spaces within lines, drop invisible/control characters, keep paragraph breaks."""
    text = _LINE_BREAK.sub("\n", text).replace("\u2029", "\n\n")
    text = _CONTROL.sub(" ", _INVISIBLE.sub("", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _decode_text(data: bytes, name: str) -> str:
    """Decode a text file; raise ``ParseError`` if the bytes look binary rather than text."""
    for signature, kind in _BINARY_SIGNATURES.items():
        if data.startswith(signature):
            raise ParseError(f"{name} looks like {kind}, not a text file; check the file extension")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates: tuple[str, ...] = ("utf-16",)
    elif b"\x00" in data:
        raise ParseError(f"{name} looks binary (it contains NUL bytes), not like a text file")
    else:
        candidates = ("utf-8-sig", "cp1252", "latin-1")
    for encoding in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if len(_CONTROL.findall(text)) > _MAX_CONTROL_RATIO * len(text):
            break
        if encoding not in ("utf-8-sig", "utf-16"):
            logger.info("%s is not valid UTF-8; decoded it as %s", name, encoding)
        return text
    raise ParseError(f"{name} looks binary (it is not readable as UTF-8 or Latin-1 text)")


# ---------------------------------------------------------------------------------------------- parsers


def _parse_txt(data: bytes, name: str, limits: ParseLimits) -> list[Section]:
    return [Section(_normalise(_decode_text(data, name)))]


def _parse_md(data: bytes, name: str, limits: ParseLimits) -> list[Section]:
    from markdown_it import MarkdownIt

    text = _decode_text(data, name)
    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    try:
        tokens = parser.parse(text)
    except MemoryError:  # past the sandbox's address-space limit: reported as such
        raise
    except Exception as exc:
        raise ParseError(f"{name} could not be read as Markdown: {_short_reason(exc)}") from exc
    blocks: list[str] = []
    group: list[str] = []  # lines of the list or table being read, joined by single newlines
    row: list[str] | None = None
    depth = 0  # nesting of lists and tables
    headings: list[tuple[int, str]] = []
    level = 0  # of the heading being read
    for tok in tokens:
        if tok.type == "heading_open":
            level = int(tok.tag[1:])
        elif tok.type == "heading_close":
            level = 0
        elif tok.type in ("bullet_list_open", "ordered_list_open", "table_open"):
            depth += 1
        elif tok.type in ("bullet_list_close", "ordered_list_close", "table_close"):
            depth -= 1
            if depth == 0 and group:
                blocks.append("\n".join(group))
                group = []
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close" and row is not None:
            group.append(" | ".join(cell for cell in row if cell))
            row = None
        else:
            piece = _md_block_text(tok, name, limits)
            if piece is None:
                continue
            if level:
                headings.append((level, piece))
            if row is not None:
                row.append(piece)
            else:
                (group if depth else blocks).append(piece)
    text = _normalise("\n\n".join(b for b in blocks if b.strip()))
    return [Section(text, headings=_locate_headings(text, headings))]


def _md_block_text(tok: Any, name: str, limits: ParseLimits) -> str | None:
    if tok.type == "inline":
        parts: list[str] = []
        for child in tok.children or []:
            if child.type in ("text", "code_inline", "image"):
                parts.append(child.content)
            elif child.type == "softbreak":
                parts.append(" ")
            elif child.type == "hardbreak":
                parts.append("\n")
        return "".join(parts)
    if tok.type in ("fence", "code_block"):
        return str(tok.content).rstrip("\n")
    if tok.type == "html_block":
        return _html_text(str(tok.content), name, limits)
    return None


def _parse_html(data: bytes, name: str, limits: ParseLimits) -> list[Section]:
    outline: list[tuple[int, str]] = []
    text = _normalise(_html_text(data, name, limits, outline))
    title = next((heading for level, heading in outline if level == 0), "")
    found = [(level, heading) for level, heading in outline if level > 0]
    return [Section(text, title=_normalise(title), headings=_locate_headings(text, found))]


class _MarkupTooDeep(Exception):
    pass


class _DepthGauge:
    """An lxml parser target that only follows the element nesting, and stops past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0

    def start(self, tag: str, attrib: Any) -> None:
        self.depth += 1
        if self.depth > self.limit:
            raise _MarkupTooDeep

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        pass

    def close(self) -> None:
        pass


def _check_depth(markup: bytes | str, name: str, limit: int) -> None:
    """Raise ``ParseLimitError`` if the markup nests elements deeper than ``limit`` (a linear pass of the
    same lxml HTML parser that builds the tree, so unclosed tags count as the tree would hold them)."""
    from lxml import etree

    parser = etree.HTMLParser(target=_DepthGauge(limit))
    try:
        parser.feed(markup)
        parser.close()
    except _MarkupTooDeep:
        raise ParseLimitError(
            f"{name} nests its elements more than {limit} levels deep (INGEST_MARKUP_MAX_DEPTH)"
        ) from None
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - not for this pass to judge: the real parse reports what is wrong with the file
        return


def _html_text(
    markup: bytes | str, name: str, limits: ParseLimits, outline: list[tuple[int, str]] | None = None
) -> str:
    """The text of an HTML document; ``outline`` (if given) receives its title (level 0) and headings."""
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import PreformattedString

    _check_depth(markup, name, limits.markup_max_depth)
    try:
        soup = BeautifulSoup(markup, "lxml")
    except MemoryError:  # past the sandbox's address-space limit: reported as such
        raise
    except Exception as exc:
        raise ParseError(f"{name} could not be read as HTML: {_short_reason(exc)}") from exc
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    if outline is not None:
        outline.append((0, title))
        outline.extend((int(h.name[1]), h.get_text(" ", strip=True)) for h in soup.find_all(_HTML_HEADINGS))
    for node in list(soup.find_all(string=True)):
        if isinstance(node, PreformattedString):  # comments, CDATA, doctype, processing instructions
            node.extract()
        elif type(node) is NavigableString and node.find_parent("pre") is None:
            node.replace_with(re.sub(r"\s+", " ", node))  # source line breaks are not paragraph breaks
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for row in reversed(soup.find_all("tr")):  # innermost first, so nested tables end up in their cell
        cells = (cell.get_text(" ", strip=True) for cell in row.find_all(["td", "th"], recursive=False))
        row.replace_with(" | ".join(text for text in cells if text) + "\n")
    for line in soup.find_all(_HTML_LINES):
        line.insert_after("\n")
    for block in soup.find_all(_HTML_BLOCKS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    body = soup.get_text()
    return f"{title}\n\n{body}" if title and not body.lstrip().startswith(title) else body


def _parse_pdf(data: bytes, name: str, limits: ParseLimits) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name} is encrypted (password-protected); upload an unprotected copy")
        pages = list(reader.pages)
    except ParseError:
        raise
    except (DependencyError, FileNotDecryptedError) as exc:
        raise ParseError(f"{name} is encrypted and could not be opened: {_short_reason(exc)}") from exc
    except MemoryError:  # past the sandbox's address-space limit: reported as such
        raise
    except Exception as exc:
        raise ParseError(
            f"{name} could not be read as PDF: {_short_reason(exc)} (damaged or incomplete?)"
        ) from exc
    sections: list[Section] = []
    failures: list[str] = []
    for number, page in enumerate(pages, start=1):
        try:
            text = _normalise(page.extract_text() or "")
        except MemoryError:  # past the sandbox's address-space limit: reported as such
            raise
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on a bad page; keep the others
            logger.warning("%s: could not extract text from page %d: %s", name, number, _short_reason(exc))
            failures.append(_short_reason(exc))
            continue
        if text:
            sections.append(Section(text, page=number))
    if not sections and failures:
        raise ParseError(f"{name} could not be read as PDF: {failures[0]}")
    return sections


def _parse_docx(data: bytes, name: str, limits: ParseLimits) -> list[Section]:
    import docx

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        if len(members) > limits.docx_max_members:
            raise ParseLimitError(
                f"{name} holds {len(members)} files; the limit is {limits.docx_max_members} "
                "(INGEST_DOCX_MAX_MEMBERS)"
            )
        unpacked = sum(info.file_size for info in members)
        if unpacked > limits.docx_max_unpacked_bytes:
            raise ParseLimitError(
                f"{name} unpacks to {unpacked / 2**20:.0f} MiB; the limit is "
                f"{limits.docx_max_unpacked_bytes / 2**20:.0f} MiB (INGEST_DOCX_MAX_UNPACKED_MB)"
            )
        document = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(document))
        title, headings = _docx_outline(document)
    except ParseError:
        raise
    except MemoryError:  # past the sandbox's address-space limit: reported as such
        raise
    except Exception as exc:
        raise ParseError(f"{name} could not be read as a Word document: {_short_reason(exc)}") from exc
    text = _normalise("\n\n".join(blocks))
    return [Section(text, title=title, headings=_locate_headings(text, headings))]


def _docx_outline(document: Any) -> tuple[str, list[tuple[int, str]]]:
    """The title (core property, else the first "Title" paragraph) and the "Heading N" paragraphs."""
    title = _normalise(document.core_properties.title or "")
    headings: list[tuple[int, str]] = []
    try:
        for paragraph in document.paragraphs:
            style = (paragraph.style.name if paragraph.style is not None else "").lower()
            found = _DOCX_HEADING.fullmatch(style)
            if found and paragraph.text.strip():
                headings.append((int(found[1]), paragraph.text))
            elif style == "title" and not title:
                title = _normalise(paragraph.text)
    except (AttributeError, KeyError, ValueError) as exc:  # a broken style table: the text is still good
        logger.debug("no outline from a .docx: %s", _short_reason(exc))
    return title, headings


def _locate_headings(text: str, found: list[tuple[int, str]]) -> tuple[Heading, ...]:
    """Where each heading (in document order) starts a line of the normalised ``text`` (missing: left out)."""
    located: list[Heading] = []
    at = 0
    for level, raw in found:
        heading = _normalise(raw)
        index = text.find(heading, at) if heading else -1
        while index > 0 and text[index - 1] != "\n":
            index = text.find(heading, index + 1)
        if index >= 0:
            located.append(Heading(index, level, heading))
            at = index + len(heading)
    return tuple(located)


def _docx_blocks(container: Any) -> Iterator[str]:
    """Paragraph texts and table rows (cells joined by " | "), in document order."""
    for item in container.iter_inner_content():  # paragraphs and tables
        if not hasattr(item, "rows"):
            if item.text.strip():
                yield item.text
            continue
        rows: list[str] = []
        for row in item.rows:
            cells: list[str] = []
            seen: set[Any] = set()
            for cell in row.cells:
                if cell._tc in seen:  # a merged cell is repeated once per grid column it spans
                    continue
                seen.add(cell._tc)
                text = " ".join(part.replace("\n", " ") for part in _docx_blocks(cell))
                if text.strip():
                    cells.append(text)
            if cells:
                rows.append(" | ".join(cells))
        if rows:
            yield "\n".join(rows)


_PARSERS: dict[str, Parser] = {
    "txt": _parse_txt,
    "md": _parse_md,
    "html": _parse_html,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
}
