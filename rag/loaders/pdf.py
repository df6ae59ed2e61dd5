"""PDF files: the text layer page by page; pages without one read by OCR (rag.loaders.ocr)."""

from __future__ import annotations

import io
import logging

from rag.errors import LoaderError
from rag.loaders.ocr import INSTALL_HINT, ocr_setting, read_pages, tesseract_installed
from rag.loaders.base import Parsed, join_parts

log = logging.getLogger(__name__)


def load_pdf(data: bytes, name: str, ocr_mode: str | None = None) -> Parsed:
    """A PDF's pages (page starts kept); scanned pages by OCR when RAG_OCR allows it."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoaderError("the PDF is password-protected; save a copy without a password")
        pages = [(page.extract_text() or "").replace("\r\n", "\n").strip() for page in reader.pages]
    except LoaderError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files
        if "decrypt" in str(exc).lower() or "password" in str(exc).lower():
            raise LoaderError("the PDF is password-protected; save a copy without a password") from None
        raise LoaderError(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    blank = [n for n, page in enumerate(pages) if not page]
    if blank:
        pages = _fill_scanned(data, pages, blank, name, ocr_mode)
    text, starts = join_parts(pages)
    return Parsed(text=text, page_starts=starts)


def _fill_scanned(data: bytes, pages: list[str], blank: list[int], name: str, ocr_mode: str | None) -> list[str]:
    """The pages with those that have no text layer read by OCR, or left empty with a warning."""
    mode = ocr_setting(ocr_mode)
    numbers = ", ".join(str(n + 1) for n in blank[:10]) + (" ..." if len(blank) > 10 else "")
    pages_have = f"page {numbers} has" if len(blank) == 1 else f"pages {numbers} have"
    if mode == "off":
        log.warning("%s: %s no text layer and %s skipped (RAG_OCR=off; set RAG_OCR=auto and %s)",
                    name, pages_have, "is" if len(blank) == 1 else "are", INSTALL_HINT)
        return pages
    if not tesseract_installed():
        log.warning("%s: %s no text layer and %s skipped; %s", name, pages_have,
                    "is" if len(blank) == 1 else "are", INSTALL_HINT)
        return pages
    read = read_pages(data, blank, name)
    return [read.get(n, page) for n, page in enumerate(pages)]
