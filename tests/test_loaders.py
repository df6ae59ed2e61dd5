"""Loaders: which files are read, how they are decoded, and what is skipped and why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag import faiss_folder as store, loaders
from rag.chunking import Chunker
from rag.indexer import build_index
from rag.loaders import Skip, SourceFile
from rag.types import Document


def _load_all(folder: Path) -> tuple[dict[str, Document], dict[str, str]]:
    docs, skips = {}, {}
    for item in loaders.load_documents(folder):
        if isinstance(item, Skip):
            skips[item.rel] = item.reason
        else:
            docs[item.path] = item
    return docs, skips


def test_txt_md_and_subfolders(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Alpha text.\n", encoding="utf-8")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "b.md").write_text("# Title\n\nBeta *markdown*.\n", encoding="utf-8")
    (tmp_path / "notes" / "deeper").mkdir()
    (tmp_path / "notes" / "deeper" / "c.markdown").write_text("Gamma.\n", encoding="utf-8")
    docs, skips = _load_all(tmp_path)
    assert set(docs) == {"a.txt", "notes/b.md", "notes/deeper/c.markdown"}
    assert skips == {}
    assert docs["a.txt"].text == "Alpha text.\n"
    assert docs["notes/b.md"].kind == "md"
    assert docs["notes/b.md"].text == "# Title\n\nBeta *markdown*.\n"
    assert docs["a.txt"].content_hash == loaders.content_hash(b"Alpha text.\n")


def test_html_text_only(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>Head title</title><style>body { color: red; }</style>"
        "<script>var secret = 'SCRIPTTEXT';</script></head>"
        "<body><h1>Visible heading</h1><p>First paragraph with <b>bold</b> words.</p>"
        "<script type='module'>console.log('MORESCRIPT')</script>"
        "<noscript>NOSCRIPTTEXT</noscript><p>Second paragraph.</p></body></html>",
        encoding="utf-8",
    )
    docs, _ = _load_all(tmp_path)
    text = docs["page.html"].text
    assert docs["page.html"].kind == "html"
    assert "Visible heading" in text
    assert "First paragraph with" in text and "Second paragraph." in text
    for hidden in ("SCRIPTTEXT", "MORESCRIPT", "color: red", "NOSCRIPTTEXT", "var secret", "<p>"):
        assert hidden not in text


def test_pdf_pages_and_page_numbers_on_chunks(tmp_path: Path, pdf_bytes) -> None:
    page1 = [f"Apples sentence number {i} is about red fruit." for i in range(12)]
    page2 = [f"Bananas sentence number {i} is about yellow fruit." for i in range(12)]
    (tmp_path / "fruit.pdf").write_bytes(pdf_bytes([page1, page2]))
    docs, skips = _load_all(tmp_path)
    assert skips == {}
    doc = docs["fruit.pdf"]
    assert doc.kind == "pdf"
    assert len(doc.page_starts) == 2
    assert doc.page_starts[0] == 0
    assert doc.text[doc.page_starts[1] :].startswith("Bananas sentence number 0")
    assert "Apples sentence number 11" in doc.text[: doc.page_starts[1]]

    chunks = Chunker(48, 8).split(doc)
    assert len(chunks) > 2
    pages = set()
    for chunk in chunks:
        assert chunk.page is not None and chunk.page_end is not None
        pages.update(range(chunk.page, chunk.page_end + 1))
        if "Apples" in chunk.text:
            assert chunk.page == 1
        if "Bananas" in chunk.text:
            assert chunk.page_end == 2
        if "Bananas" in chunk.text and "Apples" not in chunk.text:
            assert chunk.page == 2
    assert pages == {1, 2}


def test_damaged_pdf_is_skipped_with_reason(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (tmp_path / "ok.txt").write_text("Fine.\n", encoding="utf-8")
    docs, skips = _load_all(tmp_path)
    assert set(docs) == {"ok.txt"}
    assert "PDF" in skips["broken.pdf"]


def test_hidden_and_unsupported_skipped_with_reason(tmp_path: Path) -> None:
    (tmp_path / ".secret.txt").write_text("hidden\n", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.txt").write_text("inside a hidden folder\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "Makefile").write_text("all:\n", encoding="utf-8")
    (tmp_path / "old.doc").write_bytes(loaders.OLE_MAGIC)
    (tmp_path / "doc.docx").write_bytes(b"PK\x03\x04")
    (tmp_path / "kept.txt").write_text("Kept.\n", encoding="utf-8")
    files, skips = loaders.scan(tmp_path)
    assert [f.rel for f in files] == ["doc.docx", "kept.txt"]  # a .docx is read (and checked) later
    reasons = {s.rel: s.reason for s in skips}
    assert reasons[".secret.txt"] == "hidden file"
    assert "unsupported" in reasons["image.png"] and ".png" in reasons["image.png"]
    assert "unsupported" in reasons["old.doc"] and ".doc" in reasons["old.doc"]
    assert "no extension" in reasons["Makefile"]
    assert not any(rel.startswith(".git/") for rel in reasons)  # hidden folders are not entered


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("latin-1", "Le café est très bon. À Noël, nous mangeons une bûche glacée. Ça coûte cher, señor.\n" * 4),
        ("cp1252", "\u201cSmart quotes\u201d cost \u20ac5 \u2014 it\u2019s a deal, na\u00efve caf\u00e9.\n" * 4),
    ],
)
def test_non_utf8_decoded(tmp_path: Path, encoding: str, text: str) -> None:
    data = text.encode(encoding)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    (tmp_path / "legacy.txt").write_bytes(data)
    docs, skips = _load_all(tmp_path)
    assert skips == {}
    assert docs["legacy.txt"].text == text


def test_utf8_bom_and_newlines_normalised(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfFirst line\r\nSecond line\rThird line\n")
    docs, _ = _load_all(tmp_path)
    assert docs["bom.txt"].text == "First line\nSecond line\nThird line\n"


def test_empty_file_gives_no_chunks_and_no_crash(make_settings, hashing_embedder) -> None:
    settings = make_settings()
    settings.seeds_dir.mkdir()
    (settings.seeds_dir / "empty.txt").write_bytes(b"")
    (settings.seeds_dir / "blank.md").write_text("\n\n   \n\t\n", encoding="utf-8")
    (settings.seeds_dir / "real.txt").write_text("Some real content here.\n", encoding="utf-8")
    warnings: list[str] = []
    report = build_index(settings, embedder=hashing_embedder, warn=warnings.append)
    assert report.chunks == 1
    assert sorted(report.added) == ["blank.md", "empty.txt", "real.txt"]
    loaded = store.load(settings.index_dir)
    assert loaded.manifest.documents["empty.txt"].chunk_ids == []
    assert loaded.manifest.documents["blank.md"].chunk_ids == []
    assert [c.source for c in loaded.chunks] == ["real.txt"]
    assert any("empty.txt" in w and "no text" in w for w in warnings)


def test_binary_disguised_as_txt_skipped_with_warning(make_settings, hashing_embedder) -> None:
    settings = make_settings()
    settings.seeds_dir.mkdir()
    (settings.seeds_dir / "program.txt").write_bytes(bytes(range(256)) * 40)
    (settings.seeds_dir / "controls.md").write_bytes(b"\x01\x02\x03\x04\x05\x06abc" * 100)
    (settings.seeds_dir / "real.txt").write_text("Some real content here.\n", encoding="utf-8")
    warnings: list[str] = []
    report = build_index(settings, embedder=hashing_embedder, warn=warnings.append)
    assert report.added == ["real.txt"]
    assert report.chunks == 1
    for name in ("program.txt", "controls.md"):
        assert any(name in w and "binary" in w for w in warnings), warnings
        assert any(name in s and "binary" in s for s in report.skipped)
    assert set(store.load(settings.index_dir).manifest.documents) == {"real.txt"}


def test_parse_binary_raises_loader_error(tmp_path: Path) -> None:
    from rag.errors import LoaderError

    path = tmp_path / "x.txt"
    with pytest.raises(LoaderError, match="binary"):
        loaders.parse(SourceFile("x.txt", path), b"MZ\x90\x00\x03\x00\x00\x00")


def test_symlink_outside_seeds_not_followed(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET outside the seeds folder.\n", encoding="utf-8")
    (seeds / "inside.txt").write_text("Inside.\n", encoding="utf-8")
    os.symlink(outside / "secret.txt", seeds / "link.txt")
    os.symlink(outside, seeds / "linked-folder")
    os.symlink(seeds / "inside.txt", seeds / "alias.txt")  # inside the folder: allowed
    os.symlink(tmp_path / "nowhere.txt", seeds / "dangling.txt")
    docs, skips = _load_all(seeds)
    assert set(docs) == {"inside.txt", "alias.txt"}
    assert "outside" in skips["link.txt"]
    assert "broken" in skips["dangling.txt"]
    assert not any("SECRET" in d.text for d in docs.values())
    assert not any(rel.startswith("linked-folder") for rel in list(docs) + list(skips))


def test_document_text_refuses_paths_outside(tmp_path: Path) -> None:
    from rag.errors import LoaderError

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (tmp_path / "outside.txt").write_text("outside\n", encoding="utf-8")
    (seeds / "in.txt").write_text("inside\n", encoding="utf-8")
    assert loaders.document_text(seeds, "in.txt") == "inside\n"
    with pytest.raises(LoaderError, match="outside"):
        loaders.document_text(seeds, "../outside.txt")
