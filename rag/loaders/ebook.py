"""E-books (.epub), read with the zip and HTML readers: one chapter (a spine document) a page and
a section whose chunks carry "book title > chapter title", a paragraph a line."""

from __future__ import annotations

import io
import posixpath
import zipfile
from urllib.parse import unquote
from xml.etree import ElementTree

from rag.errors import LoaderError
from rag.loaders.archive import ZIP_PARTS, check_archive
from rag.loaders.base import Parsed, decode_text, html_text, join_parts, one_line, short_header
from rag.types import Section

_HTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})
_FONT_SUFFIXES = (".ttf", ".otf", ".woff", ".woff2")  # obfuscated fonts are not DRM


def load_epub(data: bytes, name: str) -> Parsed:
    """A book's chapters in reading order (the spine), one a page, a paragraph a line."""
    names = check_archive("epub", data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            if "META-INF/encryption.xml" in names and _encrypted(book.read("META-INF/encryption.xml")):
                raise LoaderError("the e-book is encrypted (DRM); only DRM-free EPUB files can be read")
            title, chapters = _chapters(book, names)
    except LoaderError:
        raise
    except (zipfile.BadZipFile, ElementTree.ParseError, KeyError, ValueError, OSError, EOFError) as exc:
        raise LoaderError(f"not a readable EPUB e-book ({type(exc).__name__}: {exc})") from None
    chapters = [(heading, text) for heading, text in chapters if text]
    if not chapters:
        raise LoaderError("the e-book is empty (no text in its chapters)")
    text, starts = join_parts([body for _, body in chapters])
    sections = tuple(
        Section(start=start, header=short_header(" > ".join(p for p in (title, heading or f"Chapter {n}") if p)))
        for n, (start, (heading, _)) in enumerate(zip(starts, chapters), start=1)
    )
    return Parsed(text=text, page_starts=starts, sections=sections)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _encrypted(xml: bytes) -> bool:
    """Whether encryption.xml covers anything but fonts (font obfuscation is allowed)."""
    root = ElementTree.fromstring(xml)
    uris = [el.get("URI", "") for el in root.iter() if _local(el.tag) == "CipherReference"]
    return any(not uri.lower().endswith(_FONT_SUFFIXES) for uri in uris)


def _chapters(book: zipfile.ZipFile, names: frozenset[str]) -> tuple[str, list[tuple[str, str]]]:
    """The book's title, and (chapter title, text) of each HTML document of its spine, in order."""
    container = ElementTree.fromstring(book.read(ZIP_PARTS["epub"]))
    rootfile = next((el.get("full-path", "") for el in container.iter() if _local(el.tag) == "rootfile"), "")
    if rootfile not in names:
        raise LoaderError("not a readable EPUB e-book (its package document is missing)")
    package = ElementTree.fromstring(book.read(rootfile))
    base = posixpath.dirname(rootfile)
    items = {
        el.get("id"): (el.get("href", ""), el.get("media-type", ""))
        for el in package.iter() if _local(el.tag) == "item"
    }
    title = next((one_line(el.text or "") for el in package.iter() if _local(el.tag) == "title"), "")
    chapters = []
    for ref in (el for el in package.iter() if _local(el.tag) == "itemref"):
        href, media = items.get(ref.get("idref"), ("", ""))
        path = posixpath.normpath(posixpath.join(base, unquote(href.partition("#")[0])))
        if media in _HTML_TYPES and path in names:
            chapters.append(_chapter(decode_text(book.read(path))))
    return title, chapters


def _chapter(markup: str) -> tuple[str, str]:
    """A chapter's title (its first heading, else its <title>) and its text."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    tag = soup.find(["h1", "h2", "h3"]) or soup.find("title")
    return (one_line(tag.get_text(" ")) if tag else ""), html_text(markup)
