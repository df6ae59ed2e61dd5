"""Word documents: one paragraph a line (so the line number is the paragraph number), tables row by
row, headings kept and located; damaged, encrypted and empty files skipped with a reason."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
import pytest

from rag import faiss_folder as store, loaders
from rag.errors import LoaderError
from rag.indexer import build_index
from rag.loaders import Skip, SourceFile
from rag.pipeline import Rag

REPORT_LINES = [
    "Quarterly Report",  # Title
    "Summary",  # Heading 1
    "The Lisbon office opened in March and now employs forty engineers.",
    "Revenue grew in every region except the north.",
    "Regional figures",  # Heading 2
    "Region | Revenue | Growth",
    "South | 12 M€ | +8 %",
    "North | 7 M€ | −2 %",
    "Zürich and Kraków teams moved to the new ticketing system.",
    "Outlook",  # Heading 1
    "Next year the Porto office will open with twelve people.",
]


def report_docx() -> bytes:
    """A real .docx made with python-docx: title, headings, paragraphs, a table, unicode."""
    document = docx.Document()
    document.add_heading("Quarterly Report", level=0)
    document.add_heading("Summary", level=1)
    document.add_paragraph("The Lisbon office opened in March and now employs forty engineers.")
    document.add_paragraph("")  # spacing only: not a line
    para = document.add_paragraph("Revenue grew in every region")
    para.add_run().add_break()  # a soft line break stays inside the paragraph's line
    para.add_run("except the north.")
    document.add_heading("Regional figures", level=2)
    table = document.add_table(rows=3, cols=3)
    for row, values in zip(table.rows, [("Region", "Revenue", "Growth"), ("South", "12 M€", "+8 %"),
                                        ("North", "7 M€", "−2 %")]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_paragraph("Zürich and Kraków teams moved to the new ticketing system.")
    document.add_heading("Outlook", level=1)
    document.add_paragraph("Next year the Porto office will open with twelve people.")
    return save(document)


def save(document) -> bytes:
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def rezip(data: bytes, replace: dict[str, bytes | None]) -> bytes:
    """The same archive with some members replaced (bytes) or dropped (None)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename in replace:
                if replace[info.filename] is not None:
                    dst.writestr(info.filename, replace[info.filename])
            else:
                dst.writestr(info, src.read(info.filename))
    return out.getvalue()


def encrypted_looking() -> bytes:
    """What Word writes for a password-protected file: an OLE compound file whose directory names
    an EncryptionInfo and an EncryptedPackage stream (names are UTF-16LE)."""
    header = loaders.OLE_MAGIC + b"\x00" * 504
    directory = "Root Entry".encode("utf-16-le").ljust(128, b"\x00")
    directory += "EncryptionInfo".encode("utf-16-le").ljust(128, b"\x00")
    directory += "EncryptedPackage".encode("utf-16-le").ljust(128, b"\x00")
    return header + directory + b"\x5a" * 2048


def parse(data: bytes, name: str = "report.docx"):
    return loaders.parse(SourceFile(name, Path(name)), data)


def test_paragraphs_tables_and_headings_one_line_each():
    data = report_docx()
    document = parse(data)
    assert document.kind == "docx"
    assert document.page_starts == ()
    assert document.text.split("\n") == REPORT_LINES
    assert document.content_hash == loaders.content_hash(data)


def test_headings_are_located_by_line():
    found = loaders.docx_headings(report_docx())
    assert [(h.line, h.level, h.text) for h in found] == [
        (1, 0, "Quarterly Report"),
        (2, 1, "Summary"),
        (5, 2, "Regional figures"),
        (10, 1, "Outlook"),
    ]
    assert loaders.heading_at(found, 3).text == "Summary"
    assert loaders.heading_at(found, 7).text == "Regional figures"
    assert loaders.heading_at(found, 11).text == "Outlook"
    assert loaders.heading_at([], 3) is None


def test_headings_from_the_seeds_folder_and_not_for_other_kinds(tmp_path: Path):
    (tmp_path / "report.docx").write_bytes(report_docx())
    (tmp_path / "notes.txt").write_text("Summary\n", encoding="utf-8")
    assert [h.text for h in loaders.headings(tmp_path, "report.docx")][:2] == ["Quarterly Report", "Summary"]
    assert loaders.headings(tmp_path, "notes.txt") == []
    assert loaders.headings(tmp_path, "../report.docx") == []


def test_merged_cells_are_listed_once():
    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    top = table.cell(0, 0).merge(table.cell(0, 2))
    top.text = "Spanning header"
    for cell, value in zip(table.rows[1].cells, ("a", "b", "c")):
        cell.text = value
    assert parse(save(document)).text == "Spanning header\na | b | c"


def test_document_text_gives_the_viewer_the_same_lines(tmp_path: Path):
    (tmp_path / "report.docx").write_bytes(report_docx())
    text = loaders.document_text(tmp_path, "report.docx")
    assert text.split("\n")[8] == "Zürich and Kraków teams moved to the new ticketing system."


def _load_all(folder: Path) -> tuple[set[str], dict[str, str]]:
    docs, skips = set(), {}
    for item in loaders.load_documents(folder):
        if isinstance(item, Skip):
            skips[item.rel] = item.reason
        else:
            docs.add(item.path)
    return docs, skips


def _empty_docx() -> bytes:
    return save(docx.Document())


def _blank_paragraphs_docx() -> bytes:
    document = docx.Document()
    for _ in range(5):
        document.add_paragraph("   ")
    document.add_table(rows=2, cols=2)
    return save(document)


BAD_FILES = {
    "plain-text.docx": (b"This is a plain text file that someone renamed.\n", "not a zip"),
    "picture.docx": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a zip"),
    "truncated.docx": (None, "not a zip"),  # the first half of a real file
    "other-zip.docx": (None, "no word/document.xml"),
    "bad-xml.docx": (None, "not a readable Word document"),
    "locked.docx": (encrypted_looking(), "password-protected"),
    "old-format.docx": (loaders.OLE_MAGIC + b"\x00" * 4096, "old-format Word (.doc)"),
    "empty.docx": (None, "empty"),
    "blank.docx": (None, "empty"),
}


def _bad_bytes(name: str) -> bytes:
    data, _ = BAD_FILES[name]
    if data is not None:
        return data
    good = report_docx()
    return {
        "truncated.docx": lambda: good[: len(good) // 2],
        "other-zip.docx": lambda: rezip(good, {"word/document.xml": None}),
        "bad-xml.docx": lambda: rezip(good, {"word/document.xml": b"<w:document><w:body><w:p>"}),
        "empty.docx": _empty_docx,
        "blank.docx": _blank_paragraphs_docx,
    }[name]()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_word_files_raise_a_one_line_loader_error(name: str):
    with pytest.raises(LoaderError) as info:
        parse(_bad_bytes(name), name)
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert BAD_FILES[name][1] in message
    assert "\n" not in message and len(message) < 300


def test_bad_word_files_are_skipped_and_the_rest_indexed(make_settings, hashing_embedder):
    settings = make_settings()
    settings.seeds_dir.mkdir()
    for name in BAD_FILES:
        (settings.seeds_dir / name).write_bytes(_bad_bytes(name))
    (settings.seeds_dir / "report.docx").write_bytes(report_docx())
    docs, skips = _load_all(settings.seeds_dir)
    assert docs == {"report.docx"}
    assert set(skips) == set(BAD_FILES)
    warnings: list[str] = []
    report = build_index(settings, embedder=hashing_embedder, warn=warnings.append)
    assert report.added == ["report.docx"]
    for name, (_, says) in BAD_FILES.items():
        assert any(line.startswith(f"{name}: ") and says in line for line in report.skipped), name
    assert set(store.load(settings.index_dir).manifest.documents) == {"report.docx"}


def test_a_zip_that_unpacks_to_too_much_is_refused(monkeypatch):
    monkeypatch.setattr("rag.loaders.archive.MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(LoaderError, match="unpacks to"):
        parse(report_docx())


def test_ask_cites_the_paragraph_lines_of_a_docx(make_settings):
    settings = make_settings(generator="extractive", relevance_floor=0.05)
    settings.seeds_dir.mkdir()
    (settings.seeds_dir / "report.docx").write_bytes(report_docx())
    (settings.seeds_dir / "rivers.txt").write_text(
        "The Danube flows through ten countries.\nVienna and Budapest stand on the Danube.\n",
        encoding="utf-8",
    )
    rag = Rag(settings)
    report = rag.index()
    assert sorted(report.added) == ["report.docx", "rivers.txt"]
    answer = rag.ask("When will the Porto office open, and with how many people?")
    assert not answer.refused
    first = answer.citations[0]
    assert first.source == "report.docx"
    assert (first.start_line, first.end_line) == (11, 11)  # the 11th paragraph of the document
    assert first.page is None
    assert first.verified
    lines = rag.document_lines("report.docx")
    assert lines is not None and first.quote in lines[first.start_line - 1]
    assert loaders.heading_at(loaders.headings(settings.seeds_dir, "report.docx"), first.start_line).text == "Outlook"
