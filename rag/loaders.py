"""Find and read documents in the seeds folder: txt, md, html (text only), pdf (pages kept) and
docx (one paragraph a line)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.errors import LoaderError
from rag.types import Document, Frozen

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt": "txt", ".md": "md", ".markdown": "md", ".rst": "txt"}
HTML_SUFFIXES = {".html": "html", ".htm": "html"}
PDF_SUFFIXES = {".pdf": "pdf"}
DOCX_SUFFIXES = {".docx": "docx"}
SUPPORTED = {**TEXT_SUFFIXES, **HTML_SUFFIXES, **PDF_SUFFIXES, **DOCX_SUFFIXES}
BINARY_KINDS = frozenset({"pdf", "docx"})  # container formats: never judged by the text heuristic
MAX_FILE_BYTES = 64 * 1024 * 1024
# A .docx is a zip: refuse one that would unpack to far more than any real document (a zip bomb).
MAX_DOCX_UNPACKED_BYTES = 512 * 1024 * 1024
# Office files saved with a password are OLE compound files holding these streams (MS-OFFCRYPTO).
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")


@dataclass(frozen=True)
class SourceFile:
    """A candidate file in the seeds folder: relative path and absolute path."""

    rel: str
    path: Path


@dataclass(frozen=True)
class Skip:
    rel: str
    reason: str


def scan(seeds_dir: Path) -> tuple[list[SourceFile], list[Skip]]:
    """List supported files under seeds_dir (sub-folders included), and what was skipped and why.

    Hidden files and folders are ignored silently-but-reported; symlinks that leave the folder
    are not followed.
    """
    root = seeds_dir.resolve()
    files: list[SourceFile] = []
    skips: list[Skip] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if name.startswith("."):
                skips.append(Skip(rel, "hidden file"))
                continue
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    skips.append(Skip(rel, "broken symlink"))
                    continue
                if not target.is_relative_to(root):
                    skips.append(Skip(rel, "symlink pointing outside the seeds folder"))
                    continue
            suffix = path.suffix.lower()
            if suffix not in SUPPORTED:
                skips.append(Skip(rel, f"unsupported type {suffix or '(no extension)'}"))
                continue
            files.append(SourceFile(rel, path))
    return files, skips


def read_bytes(source: SourceFile) -> bytes:
    try:
        size = source.path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoaderError(
                f"{source.rel}: {size / 1e6:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit"
            )
        return source.path.read_bytes()
    except LoaderError:
        raise
    except FileNotFoundError:
        raise LoaderError(f"{source.rel}: file disappeared while indexing") from None
    except PermissionError:
        raise LoaderError(f"{source.rel}: permission denied") from None
    except OSError as exc:
        raise LoaderError(f"{source.rel}: cannot read ({exc.strerror or exc})") from None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8, falling back to detection, never raising."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = from_bytes(data)
        best = matches.best()
        # Short Western texts often tie between code pages (cp1250 turns "ï" into "ď");
        # on a tie prefer windows-1252, the most common legacy encoding.
        for match in matches:
            if (
                best is not None
                and match.encoding == "cp1252"
                and match.chaos <= best.chaos
                and match.coherence >= best.coherence
            ):
                best = match
                break
        text = str(best) if best is not None else data.decode("utf-8", errors="replace")
    # Normalise newlines so character offsets and line numbers agree with what editors show.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    if not sample:
        return False
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return control / len(sample) > 0.10


def _load_text(data: bytes) -> tuple[str, tuple[int, ...]]:
    return decode_text(data), ()


def _load_html(data: bytes) -> tuple[str, tuple[int, ...]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    text = "\n".join(line for line in lines if line)
    return text, ()


def _load_pdf(data: bytes) -> tuple[str, tuple[int, ...]]:
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").replace("\r\n", "\n").strip() for page in reader.pages]
    except Exception as exc:  # pypdf raises many types on damaged files
        raise LoaderError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    starts: list[int] = []
    text = ""
    for page in pages:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += page
    return text, tuple(starts)


class Heading(Frozen):
    """A heading of a Word document: the line it is on, its level (0 for the title) and text."""

    line: int
    level: int
    text: str


def _docx_lines(data: bytes) -> tuple[list[str], list[Heading]]:
    """The paragraphs of a .docx one a line, and its headings.

    Line N is the N-th paragraph that holds text, so a citation's lines name paragraphs; a table
    row is one line (`cell | cell`), empty paragraphs (spacing) are left out.
    """
    import io
    import zipfile

    if data.startswith(OLE_MAGIC):
        if _ENCRYPTION_INFO in data:
            raise LoaderError("the Word document is password-protected; save a copy without a password")
        raise LoaderError("an old-format Word (.doc) or other Office file, not .docx; save it as .docx")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        raise LoaderError("not a readable Word document (not a zip archive)") from None
    if "word/document.xml" not in names:
        raise LoaderError("not a Word document (the archive holds no word/document.xml)")
    if unpacked > MAX_DOCX_UNPACKED_BYTES:
        raise LoaderError(
            f"the Word document unpacks to {unpacked / 1e6:.0f} MB, over the "
            f"{MAX_DOCX_UNPACKED_BYTES // 2**20} MB limit"
        )

    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        headings: list[Heading] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                lines.extend(_table_rows(block))
                continue
            text = _one_line(block.text)
            if not text:
                continue  # empty paragraphs are spacing, not content
            lines.append(text)
            level = _heading_level(block)
            if level is not None:
                headings.append(Heading(line=len(lines), level=level, text=text))
    except LoaderError:
        raise
    except Exception as exc:  # python-docx and lxml raise many types on damaged parts
        raise LoaderError(f"not a readable Word document ({type(exc).__name__}: {exc})") from None
    if not lines:
        raise LoaderError("the Word document is empty (no text in its paragraphs or tables)")
    return lines, headings


def _one_line(text: str) -> str:
    # Line breaks and tabs inside a paragraph become spaces, so one paragraph stays one line.
    return " ".join(text.split())


def _table_rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # noqa: SLF001  (a merged cell is listed once per grid column)
                continue
            seen.add(id(cell._tc))  # noqa: SLF001
            parts = [_one_line(p.text) for p in cell.paragraphs]
            parts += [row_text for inner in cell.tables for row_text in _table_rows(inner)]
            cells.append(" ".join(p for p in parts if p))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _heading_level(paragraph) -> int | None:
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except Exception:  # a style part that does not parse: no heading, still text
        return None
    if name == "Title":
        return 0
    if name.startswith("Heading"):
        number = name.removeprefix("Heading").strip()
        return int(number) if number.isdigit() else 1
    return None


def _load_docx(data: bytes) -> tuple[str, tuple[int, ...]]:
    lines, _ = _docx_lines(data)
    return "\n".join(lines), ()


def docx_headings(data: bytes) -> list[Heading]:
    """The headings of a .docx with the line (= paragraph number) each is on."""
    return _docx_lines(data)[1]


def headings(seeds_dir: Path, rel: str) -> list[Heading]:
    """The headings of one document (Word documents only; [] for other kinds or unreadable files)."""
    root = seeds_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or SUPPORTED.get(path.suffix.lower()) != "docx":
        return []
    try:
        return docx_headings(read_bytes(SourceFile(rel, path)))
    except LoaderError:
        return []


def heading_at(found: list[Heading], line: int) -> Heading | None:
    """The heading a line falls under (the last one at or before it), e.g. to label a citation."""
    current = None
    for heading in found:
        if heading.line > line:
            break
        current = heading
    return current


PARSERS: dict[str, Callable[[bytes], tuple[str, tuple[int, ...]]]] = {
    "txt": _load_text,
    "md": _load_text,
    "html": _load_html,
    "pdf": _load_pdf,
    "docx": _load_docx,
}


def parse(source: SourceFile, data: bytes) -> Document:
    """Turn a file's bytes into a Document, or raise LoaderError saying why not."""
    kind = SUPPORTED[source.path.suffix.lower()]
    if kind not in BINARY_KINDS and looks_binary(data):
        raise LoaderError(f"{source.rel}: looks like a binary file, not {kind} text")
    try:
        text, pages = PARSERS[kind](data)
    except LoaderError as exc:
        raise LoaderError(f"{source.rel}: {exc}") from None
    return Document(
        path=source.rel, text=text, content_hash=content_hash(data), kind=kind, page_starts=pages
    )


def load(source: SourceFile) -> Document:
    return parse(source, read_bytes(source))


def load_documents(seeds_dir: Path) -> Iterator[Document | Skip]:
    """Every document in the folder, or a Skip for what could not be used."""
    files, skips = scan(seeds_dir)
    yield from skips
    for source in files:
        try:
            yield load(source)
        except LoaderError as exc:
            yield Skip(source.rel, str(exc).removeprefix(f"{source.rel}: "))


def document_text(seeds_dir: Path, rel: str) -> str:
    """The text of one indexed document, as the chunker saw it (for quote checks and the viewer)."""
    root = seeds_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise LoaderError(f"{rel}: outside the seeds folder")
    return load(SourceFile(rel, path)).text
