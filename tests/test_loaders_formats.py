"""Slides, sheets, CSV, e-books and mail: each read so that a question answered only by it cites it
where a person would look (slide, sheet and row, chapter, message, an attachment by its own name);
corrupt, encrypted, oversized and zip-bomb files skipped or refused with a reason."""

from __future__ import annotations

import io
import logging
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import make_pdf
from openpyxl import Workbook
from pptx import Presentation

from rag import loaders
from rag.chunking import Chunker
from rag.documents import add_documents, remove_documents
from rag.errors import LoaderError, UploadError
from rag.index_handle import index_status
from rag.indexer import build_index
from rag.loaders import SourceFile
from rag.pipeline import Rag

OLE_ENCRYPTED = loaders.OLE_MAGIC + b"\x00" * 504 + "EncryptionInfo".encode("utf-16-le") + b"\x00" * 512


def deck() -> bytes:
    presentation = Presentation()
    layout = presentation.slide_layouts[1]
    for title, body, notes in [
        ("Welcome", "The agenda of the quarterly meeting.", ""),
        ("Mars base", "The Mars base grows lettuce in fourteen greenhouses.", ""),
        ("Budget", "Spending stays flat next year.", "Mention that the oxygen plant opens in 2031."),
    ]:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    return _saved(presentation)


def workbook(rows: int = 3) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = "Inventory"
    sheet.append(["Item", "Warehouse", "Quantity"])
    sheet.append(["Anchor", "Lisbon", 12])
    sheet.append(["Compass", "Porto", 4.0])
    for n in range(rows - 3):
        sheet.append([f"Spare part {n}", "Faro", n])
    staff = book.create_sheet("Staff")
    staff.append(["Name", "Role", "Office"])
    staff["A4"] = "Ingrid Okafor"  # rows 2 and 3 left empty: row numbers are the sheet's own
    staff["B4"] = "harbour pilot"
    staff["C4"] = "Setúbal"
    return _saved(book)


CSV = b"Species,Height,Park\nOak,21,Hyde\nGiant redwood,88,Muir Woods\n"


def ebook(encrypted: bool = False) -> bytes:
    chapters = {
        "one.xhtml": ("The Harbour", "<p>The ferry left at dawn.</p><p>Gulls followed it out.</p>"),
        "two.xhtml": ("The Lighthouse", "<p>Marta painted the lighthouse red in 1952.</p>"),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr("META-INF/container.xml", (
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>"))
        manifest = "".join(
            f'<item id="c{n}" href="{name}" media-type="application/xhtml+xml"/>' for n, name in enumerate(chapters)
        )
        spine = "".join(f'<itemref idref="c{n}"/>' for n in range(len(chapters)))
        book.writestr("OEBPS/content.opf", (
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Coast Stories</dc:title></metadata>'
            f"<manifest>{manifest}</manifest><spine>{spine}</spine></package>"))
        for name, (title, body) in chapters.items():
            book.writestr(f"OEBPS/{name}", (
                f'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{title}</title></head>'
                f"<body><h1>{title}</h1>{body}</body></html>"))
        if encrypted:
            book.writestr("META-INF/encryption.xml", (
                '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
                '<enc:CipherReference URI="OEBPS/two.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'))
    return buffer.getvalue()


def message(encrypted: bool = False) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Ann Moreau <ann@example.org>"
    mail["To"] = "facilities@example.org"
    mail["Date"] = "Mon, 03 Mar 2025 10:00:00 +0000"
    mail["Subject"] = "Boiler inspection"
    if encrypted:
        mail.set_content(b"\x30\x82\x01\x00", maintype="application", subtype="pkcs7-mime")
        return bytes(mail)
    mail.set_content("The boiler inspection is on Friday at nine, in the basement.")
    mail.add_attachment(make_pdf([["The boiler warranty lasts seven years."]]), maintype="application",
                        subtype="pdf", filename="warranty.pdf")
    mail.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), maintype="image", subtype="png", filename="photo.png")
    return bytes(mail)


def _saved(document) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_bomb(required: str) -> bytes:
    """A small archive that unpacks to 60 MB of zeros (a ratio near 1000)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(required, "<x/>")
        with archive.open("filler.xml", "w") as filler:
            for _ in range(60):
                filler.write(bytes(1024 * 1024))
    return buffer.getvalue()


def parse(name: str, data: bytes):
    return loaders.parse(SourceFile(name, Path(name)), data, ocr="off")


FILES = {"deck.pptx": deck, "stock.xlsx": workbook, "trees.csv": lambda: CSV, "coast.epub": ebook,
         "boiler.eml": message}


@pytest.fixture
def folder(make_settings):
    settings = make_settings(generator="extractive", relevance_floor=0.05)
    settings.seeds_dir.mkdir()
    for name, make in FILES.items():
        (settings.seeds_dir / name).write_bytes(make())
    return settings


# -- what each reader makes of its file -------------------------------------------------------------
def test_a_deck_is_a_page_per_slide_with_its_notes():
    document = parse("deck.pptx", deck())
    assert document.kind == "pptx" and len(document.page_starts) == 3
    third = document.text[document.page_starts[2]:]
    assert third.split("\n") == ["Budget", "Spending stays flat next year.", "Notes:",
                                 "Mention that the oxygen plant opens in 2031."]
    assert [s.header for s in document.sections] == ["Slide 1: Welcome", "Slide 2: Mars base", "Slide 3: Budget"]


def test_a_workbook_is_a_page_per_sheet_a_row_a_line_with_the_sheets_row_numbers():
    document = parse("stock.xlsx", workbook())
    inventory, staff = document.text.split("\n\n")
    assert inventory.split("\n") == ["Row 1: Item | Warehouse | Quantity.", "Row 2: Anchor | Lisbon | 12.",
                                     "Row 3: Compass | Porto | 4."]
    assert staff.split("\n") == ["Row 1: Name | Role | Office.", "Row 4: Ingrid Okafor | harbour pilot | Setúbal."]
    assert [s.header for s in document.sections] == ["Inventory > Item | Warehouse | Quantity",
                                                     "Staff > Name | Role | Office"]


def test_every_chunk_of_a_long_sheet_carries_its_header_row_and_stays_in_its_sheet():
    document = parse("stock.xlsx", workbook(rows=200))
    chunks = Chunker(60, 10).split(document)
    inventory = [c for c in chunks if c.page == 1]
    assert len(inventory) > 3
    assert all(c.header == "Inventory > Item | Warehouse | Quantity" for c in inventory)
    assert all("Ingrid" not in c.text for c in inventory)
    [staff] = [c for c in chunks if c.page == 2]
    assert staff.header == "Staff > Name | Role | Office" and staff.text.startswith("Row 1: Name |")


def test_a_csv_file_is_a_row_a_line_under_its_header_row():
    document = parse("trees.csv", CSV)
    assert document.text.split("\n")[2] == "Row 3: Giant redwood | 88 | Muir Woods."
    assert [s.header for s in document.sections] == ["Species | Height | Park"]
    semicolons = parse("trees.csv", b"Species;Height\nOak;21\n")
    assert semicolons.text == "Row 1: Species | Height.\nRow 2: Oak | 21."


def test_an_ebook_is_a_page_per_chapter_a_paragraph_a_line():
    document = parse("coast.epub", ebook())
    assert len(document.page_starts) == 2
    assert document.text[document.page_starts[1]:].split("\n") == [
        "The Lighthouse", "Marta painted the lighthouse red in 1952."]
    assert [s.header for s in document.sections] == ["Coast Stories > The Harbour", "Coast Stories > The Lighthouse"]


def test_a_message_has_its_headers_over_its_body_and_its_attachments_are_documents(tmp_path):
    document = parse("boiler.eml", message())
    assert document.text.startswith("From: Ann Moreau <ann@example.org>\nTo: facilities@example.org\n")
    assert "Subject: Boiler inspection\n\nThe boiler inspection is on Friday" in document.text
    assert document.text.endswith("Attachments: warranty.pdf, photo.png")
    [section] = document.sections
    assert "From: Ann Moreau" in section.header and "Subject: Boiler inspection" in section.header
    (tmp_path / "boiler.eml").write_bytes(message())
    files, _ = loaders.scan(tmp_path)
    assert [f.rel for f in files] == ["boiler.eml", "boiler.eml/warranty.pdf"]  # the picture is no document
    assert "seven years" in loaders.document_text(tmp_path, "boiler.eml/warranty.pdf")


def test_an_html_only_message_is_read_as_text():
    mail = EmailMessage()
    mail["Subject"] = "Menu"
    mail.set_content("<html><body><p>Soup on <b>Tuesday</b>.</p><script>x()</script></body></html>", subtype="html")
    assert parse("menu.eml", bytes(mail)).text == "Subject: Menu\n\nSoup on\nTuesday\n."


# -- a question answered only by one file cites it there --------------------------------------------
CASES = [
    ("How many greenhouses does the Mars base have?", "deck.pptx", 2, "fourteen greenhouses"),
    ("When does the oxygen plant open?", "deck.pptx", 3, "2031"),
    ("Who works as the harbour pilot?", "stock.xlsx", 2, "Row 4: Ingrid Okafor | harbour pilot"),
    ("How tall is the giant redwood?", "trees.csv", None, "Row 3: Giant redwood | 88"),
    ("Who painted the lighthouse red?", "coast.epub", 2, "Marta painted the lighthouse red"),
    ("When is the boiler inspection?", "boiler.eml", None, "Friday at nine"),
    ("How long does the boiler warranty last?", "boiler.eml/warranty.pdf", 1, "seven years"),
]


@pytest.mark.parametrize(("question", "source", "page", "quote"), CASES, ids=[c[1] + str(c[2]) for c in CASES])
def test_a_question_answered_by_one_file_cites_it_where_a_person_would_look(folder, question, source, page, quote):
    rag = Rag(folder)
    report = rag.index()
    assert not report.skipped
    answer = rag.ask(question)
    assert not answer.refused, answer.text
    first = answer.citations[0]
    assert (first.source, first.page) == (source, page)
    assert quote in first.quote
    assert first.verified
    lines = loaders.document_text(folder.seeds_dir, source).split("\n")
    assert quote in "\n".join(lines[first.start_line - 1:first.end_line])


def test_a_citation_of_an_attachment_is_verified_against_its_text(folder):
    rag = Rag(folder)
    rag.index()
    first = rag.ask("How long does the boiler warranty last?").citations[0]
    assert first.source == "boiler.eml/warranty.pdf" and first.verified


def test_the_documents_panel_lists_an_attachment_as_part_of_its_message_without_a_remove_button():
    from ui.documents_view import IndexedDocument, render_document_list

    listing = render_document_list(
        [IndexedDocument("boiler.eml", 1, "eml"), IndexedDocument("boiler.eml/warranty.pdf", 1, "pdf")],
        can_remove=True,
    )
    assert listing.count("data-remove=") == 1 and 'data-remove="boiler.eml"' in listing
    assert "attachment of boiler.eml" in listing


def test_status_counts_the_documents_of_each_format(folder, hashing_embedder):
    build_index(folder, embedder=hashing_embedder)
    status = index_status(folder)
    assert status.kinds == {"csv": 1, "eml": 1, "epub": 1, "pdf": 1, "pptx": 1, "xlsx": 1}
    assert "boiler.eml/warranty.pdf" in status.sources


def test_a_message_removed_takes_its_attachments_with_it(folder, hashing_embedder):
    build_index(folder, embedder=hashing_embedder)
    with pytest.raises(UploadError, match="an attachment of boiler.eml"):
        remove_documents(["boiler.eml/warranty.pdf"], folder, embedder=hashing_embedder)
    remove_documents(["boiler.eml"], folder, embedder=hashing_embedder)
    assert not {"boiler.eml", "boiler.eml/warranty.pdf"} & set(index_status(folder).sources)


# -- bad files: skipped by the indexer, refused on upload, always with a reason ----------------------
def _truncated(make):
    data = make()
    return data[: len(data) // 2]


BAD = {
    "cut.pptx": (lambda: _truncated(deck), "not a zip archive"),
    "locked.pptx": (lambda: OLE_ENCRYPTED, "password-protected"),
    "old.pptx": (lambda: loaders.OLE_MAGIC + bytes(4096), "old-format PowerPoint (.ppt)"),
    "bomb.pptx": (lambda: zip_bomb("ppt/presentation.xml"), "likely zip bomb"),
    "cut.xlsx": (lambda: _truncated(workbook), "not a zip archive"),
    "locked.xlsx": (lambda: OLE_ENCRYPTED, "password-protected"),
    "bomb.xlsx": (lambda: zip_bomb("xl/workbook.xml"), "likely zip bomb"),
    "drm.epub": (lambda: ebook(encrypted=True), "encrypted (DRM)"),
    "bomb.epub": (lambda: zip_bomb("META-INF/container.xml"), "likely zip bomb"),
    "notes.epub": (lambda: _saved(Presentation()), "no META-INF/container.xml"),
    "sealed.eml": (lambda: message(encrypted=True), "encrypted (S/MIME or PGP)"),
    "random.eml": (lambda: b"just some words, no headers at all\n", "not a mail message"),
    "binary.csv": (lambda: b"a,b\x00\x01\x02,c\n" * 10, "binary"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_file_raises_a_one_line_loader_error(name):
    make, says = BAD[name]
    with pytest.raises(LoaderError) as info:
        parse(name, make())
    message_text = str(info.value)
    assert message_text.startswith(f"{name}: ") and says in message_text
    assert "\n" not in message_text and len(message_text) < 300


def test_bad_files_are_skipped_with_their_reason_and_the_rest_indexed(folder, hashing_embedder, monkeypatch):
    for name, (make, _) in BAD.items():
        (folder.seeds_dir / name).write_bytes(make())
    (folder.seeds_dir / "huge.csv").write_bytes(b"a,b\n" * 50_000)
    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 100_000)  # huge.csv is 200 kB; the others are smaller
    report = build_index(folder, embedder=hashing_embedder)
    assert sorted(report.added) == sorted([*FILES, "boiler.eml/warranty.pdf"])
    for name, (_, says) in BAD.items():
        assert any(line.startswith(f"{name}: ") and says in line for line in report.skipped), name
    assert any(line.startswith("huge.csv: ") and "over the" in line for line in report.skipped)


def test_uploads_of_the_new_formats_are_checked_on_the_server(make_settings, hashing_embedder):
    folder = make_settings()
    folder.seeds_dir.mkdir()
    files = [(name, make()) for name, make in FILES.items()]
    files += [(name, BAD[name][0]()) for name in ("bomb.xlsx", "locked.pptx", "drm.epub", "sealed.eml")]
    files += [("renamed.pptx", b"%PDF-1.4 not a deck")]
    results = add_documents(files, folder, embedder=hashing_embedder)
    states = {r.name: (r.state, r.reason) for r in results}
    assert all(states[name][0] == "indexed" for name in FILES), states
    assert "likely zip bomb" in states["bomb.xlsx"][1]
    assert "password-protected" in states["locked.pptx"][1]
    assert "encrypted (DRM)" in states["drm.epub"][1]
    assert "encrypted (S/MIME or PGP)" in states["sealed.eml"][1]
    assert "not a zip archive" in states["renamed.pptx"][1] and "renamed" in states["renamed.pptx"][1]
    assert all(states[n][0] == "refused" for n in ("bomb.xlsx", "locked.pptx", "drm.epub", "sealed.eml", "renamed.pptx"))
    assert not (folder.seeds_dir / "bomb.xlsx").exists()


# -- scanned PDF pages without OCR ------------------------------------------------------------------
def test_a_page_without_a_text_layer_is_skipped_with_a_warning_when_ocr_is_off_or_missing(monkeypatch, caplog):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(buffer, format="PDF")
    scan = buffer.getvalue()
    with caplog.at_level(logging.WARNING, logger="rag.loaders.pdf"):
        assert parse("scan.pdf", scan).text == ""
    assert "page 1 has no text layer" in caplog.text and "RAG_OCR=off" in caplog.text
    caplog.clear()
    monkeypatch.setattr("rag.loaders.pdf.tesseract_installed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="rag.loaders.pdf"):
        document = loaders.parse(SourceFile("scan.pdf", Path("scan.pdf")), scan, ocr="auto")
    assert document.text == "" and "install tesseract-ocr" in caplog.text


def test_ocr_setting_is_read_from_the_environment(monkeypatch, make_settings):
    assert make_settings().ocr == "auto"
    assert make_settings(ocr="OFF").ocr == "off"
    from rag.loaders.ocr import ocr_setting

    monkeypatch.setenv("RAG_OCR", "off")
    assert ocr_setting(None) == "off" and ocr_setting("auto") == "auto"
