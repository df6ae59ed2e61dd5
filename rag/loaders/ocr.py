"""Reading scanned PDF pages (no text layer) with Tesseract: each page rendered, then recognised.

RAG_OCR=auto reads a page this way only when it has no text of its own and the `tesseract`
program is installed; otherwise, or with RAG_OCR=off, the page is skipped with a warning. OCR is
slow (seconds a page), so the pages read are kept by content for the life of the process: the
upload check, the build and the citation check after it read a scan once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections import OrderedDict

log = logging.getLogger(__name__)

RENDER_DPI = 300  # Tesseract reads best at about 300 dpi
PAGE_TIMEOUT = 120.0  # seconds; a page that takes longer is skipped, not waited on forever
LANGUAGE = "eng"
INSTALL_HINT = "install tesseract-ocr (apt-get install tesseract-ocr tesseract-ocr-eng) to read scanned pages"
_CACHE_PAGES = 512
_cache: OrderedDict[tuple[str, int], str] = OrderedDict()
_lock = threading.Lock()


def ocr_setting(given: str | None) -> str:
    """The OCR mode: the one given, else RAG_OCR from the settings ("auto" when they cannot be read)."""
    if given is not None:
        return given
    from rag.config import load_settings
    from rag.errors import RagError

    try:
        return load_settings().ocr
    except RagError:
        return "auto"


def tesseract_installed() -> bool:
    """Whether the `tesseract` program is on the PATH (and its Python binding importable)."""
    if shutil.which("tesseract") is None:
        return False
    try:
        import pypdfium2  # noqa: F401
        import pytesseract  # noqa: F401
    except ImportError:
        return False
    return True


def read_pages(data: bytes, numbers: list[int], name: str) -> dict[int, str]:
    """The recognised text of the pages at 0-based `numbers` (a page that fails is left out)."""
    digest = hashlib.sha256(data).hexdigest()
    found = {n: text for n in numbers if (text := _cached(digest, n)) is not None}
    todo = [n for n in numbers if n not in found]
    if not todo:
        return found
    import pypdfium2
    from tqdm import tqdm

    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        log.warning("%s: cannot render its scanned pages for OCR (%s)", name, exc)
        return found
    try:
        # A bar on a terminal only (disable=None), and only when there is more than a page to wait for.
        for n in tqdm(todo, desc=f"OCR {name}", unit="page", disable=None if len(todo) > 1 else True, leave=False):
            text = _recognise(pdf, n, name)
            if text is not None:
                found[n] = text
                _remember(digest, n, text)
    finally:
        pdf.close()
    return found


def _recognise(pdf, n: int, name: str) -> str | None:
    import pytesseract

    try:
        image = pdf[n].render(scale=RENDER_DPI / 72).to_pil()
        return pytesseract.image_to_string(image, lang=LANGUAGE, timeout=PAGE_TIMEOUT).strip()
    except (RuntimeError, pytesseract.TesseractError, OSError) as exc:  # timeouts are RuntimeError
        log.warning("%s: OCR of page %d failed (%s); the page is skipped", name, n + 1, exc)
        return None
    except Exception as exc:  # pdfium raises its own types on damaged pages
        log.warning("%s: page %d cannot be rendered for OCR (%s); the page is skipped", name, n + 1, exc)
        return None


def _cached(digest: str, n: int) -> str | None:
    with _lock:
        text = _cache.get((digest, n))
        if text is not None:
            _cache.move_to_end((digest, n))
        return text


def _remember(digest: str, n: int, text: str) -> None:
    with _lock:
        _cache[(digest, n)] = text
        while len(_cache) > _CACHE_PAGES:
            _cache.popitem(last=False)
