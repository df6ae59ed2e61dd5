"""Find and read documents in the seeds folder.

txt, md, html (text only), pdf (pages kept; scanned pages by OCR), docx (one paragraph a line),
pptx (one slide a page, with its notes), xlsx and csv (a row a line, the header row over every
chunk), epub (one chapter a page) and eml (its headers over every chunk; its attachments read as
documents of their own, named `mail.eml/attachment.pdf`). One module a family of formats.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.errors import LoaderError
from rag.loaders import ebook, mail, office, pdf, sheets, text, word
from rag.loaders.archive import ZIP_PARTS, check_archive
from rag.loaders.base import OLE_MAGIC, Parsed, decode_text, looks_binary
from rag.loaders.word import Heading, docx_headings, heading_at
from rag.types import Document

__all__ = [
    "OLE_MAGIC", "SUPPORTED", "ZIP_PARTS", "check_archive", "Heading", "Skip", "SourceFile", "content_hash", "decode_text",
    "docx_headings", "document_text", "heading_at", "headings", "load", "load_documents",
    "looks_binary", "parse", "read_bytes", "scan",
]

TEXT_SUFFIXES = {".txt": "txt", ".md": "md", ".markdown": "md", ".rst": "txt", ".csv": "csv", ".eml": "eml"}
HTML_SUFFIXES = {".html": "html", ".htm": "html"}
ZIP_SUFFIXES = {".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".epub": "epub"}
SUPPORTED = {**TEXT_SUFFIXES, **HTML_SUFFIXES, ".pdf": "pdf", **ZIP_SUFFIXES}
BINARY_KINDS = frozenset({"pdf", *ZIP_SUFFIXES.values()})  # never judged by the text heuristic
MAX_FILE_BYTES = 64 * 1024 * 1024

PARSERS: dict[str, Callable[[bytes, str], Parsed]] = {
    "txt": text.load_text,
    "md": text.load_text,
    "html": text.load_html,
    "pdf": pdf.load_pdf,
    "docx": word.load_docx,
    "pptx": office.load_pptx,
    "xlsx": sheets.load_xlsx,
    "csv": sheets.load_csv,
    "epub": ebook.load_epub,
    "eml": mail.load_eml,
}


@dataclass(frozen=True)
class SourceFile:
    """A candidate document: relative path and absolute path; for a mail's attachment, the
    message's path and the attachment's name (`member`), its relative path `mail.eml/name`."""

    rel: str
    path: Path
    member: str | None = None

    @property
    def kind(self) -> str | None:
        """The document kind its name says (txt, pdf, ...), or None when not supported."""
        return SUPPORTED.get(Path(self.member or self.path.name).suffix.lower())


@dataclass(frozen=True)
class Skip:
    rel: str
    reason: str


def scan(seeds_dir: Path) -> tuple[list[SourceFile], list[Skip]]:
    """List supported files under seeds_dir (sub-folders included), and what was skipped and why.

    Hidden files and folders are ignored silently-but-reported; symlinks that leave the folder
    are not followed. A mail's attachments of supported types are listed after it.
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
            if SUPPORTED[suffix] == "eml":
                files.extend(SourceFile(f"{rel}/{member}", path, member) for member in _attachment_names(path))
    return files, skips


def _attachment_names(path: Path) -> list[str]:
    """The names of a message's attachments that are documents ([] when it cannot be read)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []  # the message itself is refused, with its reason
        found = mail.attachments(path.read_bytes())
    except (OSError, LoaderError):
        return []
    return [name for name in found if SUPPORTED.get(Path(name).suffix.lower(), "eml") != "eml"]


def read_bytes(source: SourceFile) -> bytes:
    """The bytes of a document (a mail attachment's own bytes), or LoaderError saying why not."""
    try:
        size = source.path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LoaderError(
                f"{source.rel}: {size / 1e6:.0f} MB is over the {MAX_FILE_BYTES // 2**20} MB limit"
            )
        data = source.path.read_bytes()
    except LoaderError:
        raise
    except FileNotFoundError:
        raise LoaderError(f"{source.rel}: file disappeared while indexing") from None
    except PermissionError:
        raise LoaderError(f"{source.rel}: permission denied") from None
    except OSError as exc:
        raise LoaderError(f"{source.rel}: cannot read ({exc.strerror or exc})") from None
    if source.member is None:
        return data
    try:
        return mail.attachments(data)[source.member]
    except (KeyError, LoaderError):
        raise LoaderError(f"{source.rel}: the message no longer holds this attachment") from None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(source: SourceFile, data: bytes, *, ocr: str | None = None) -> Document:
    """Turn a file's bytes into a Document, or raise LoaderError saying why not.

    `ocr` ("auto" or "off") decides whether scanned PDF pages are read; None: RAG_OCR.
    """
    kind = source.kind
    if kind is None:
        raise LoaderError(f"{source.rel}: unsupported type")
    if kind not in BINARY_KINDS and looks_binary(data):
        raise LoaderError(f"{source.rel}: looks like a binary file, not {kind} text")
    try:
        parsed = pdf.load_pdf(data, source.rel, ocr) if kind == "pdf" else PARSERS[kind](data, source.rel)
    except LoaderError as exc:
        raise LoaderError(f"{source.rel}: {exc}") from None
    return Document(
        path=source.rel, text=parsed.text, content_hash=content_hash(data), kind=kind,
        page_starts=parsed.page_starts, sections=parsed.sections,
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


def source_file(seeds_dir: Path, rel: str) -> SourceFile:
    """The document at `rel` (a file, or `mail.eml/name` for an attachment), never outside the folder."""
    root = seeds_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise LoaderError(f"{rel}: outside the seeds folder")
    container, _, member = rel.rpartition("/")
    if container and not path.exists() and SUPPORTED.get(Path(container).suffix.lower()) == "eml":
        parent = (root / container).resolve()
        if parent.is_relative_to(root) and parent.is_file():
            return SourceFile(rel, parent, member)
    return SourceFile(rel, path)


def headings(seeds_dir: Path, rel: str) -> list[Heading]:
    """The headings of one document (Word documents only; [] for other kinds or unreadable files)."""
    try:
        source = source_file(seeds_dir, rel)
        if source.kind != "docx":
            return []
        return docx_headings(read_bytes(source))
    except LoaderError:
        return []


def document_text(seeds_dir: Path, rel: str) -> str:
    """The text of one indexed document, as the chunker saw it (for quote checks and the viewer)."""
    return load(source_file(seeds_dir, rel)).text
