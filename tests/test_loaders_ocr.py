"""A scanned PDF (pages that are images, no text layer) is read with Tesseract OCR, page numbers
kept, and a question answered only by its second page cites that page. Needs the `tesseract`
program (Debian: tesseract-ocr tesseract-ocr-eng)."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont

from rag import loaders
from rag.pipeline import Rag

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"),
]

PAGES = [
    ["Harbour report", "The north pier was repaired in May."],
    ["Lighthouse report", "The lighthouse keeper feeds eleven cats."],
]


def scanned_pdf(pages: list[list[str]]) -> bytes:
    """An image-only PDF: each page text drawn on a picture (as a scanner makes it), no text layer."""
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 44)
    except OSError:
        font = ImageFont.load_default(size=44)
    images = []
    for lines in pages:
        image = Image.new("RGB", (1700, 2200), "white")
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(lines):
            draw.text((150, 250 + 90 * n), line, font=font, fill="black")
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", resolution=200, save_all=True, append_images=images[1:])
    return buffer.getvalue()


def test_a_scanned_page_is_read_by_ocr_and_cited_at_its_page(make_settings):
    data = scanned_pdf(PAGES)
    assert loaders.parse(loaders.SourceFile("scan.pdf", loaders.Path("scan.pdf")), data, ocr="off").text == ""
    # Small chunks without overlap: one a page, so the citation's page is the quote's.
    settings = make_settings(generator="extractive", relevance_floor=0.05, ocr="auto", chunk_tokens=16, chunk_overlap=0)
    settings.seeds_dir.mkdir()
    (settings.seeds_dir / "scan.pdf").write_bytes(data)
    (settings.seeds_dir / "rivers.txt").write_text("The Danube flows through ten countries.\n", encoding="utf-8")
    rag = Rag(settings)
    report = rag.index()
    assert sorted(report.added) == ["rivers.txt", "scan.pdf"]
    document = loaders.parse(loaders.SourceFile("scan.pdf", settings.seeds_dir / "scan.pdf"), data, ocr="auto")
    assert len(document.page_starts) == 2
    assert "eleven cats" in document.text[document.page_starts[1]:]
    answer = rag.ask("How many cats does the lighthouse keeper feed?")
    assert not answer.refused, answer.text
    first = answer.citations[0]
    assert (first.source, first.page) == ("scan.pdf", 2)
    assert "eleven cats" in first.quote and first.verified
