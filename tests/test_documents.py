"""Adding and removing documents: every upload rule, atomic writes inside the seeds folder only,
and the index following the folder."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import docx
import pytest

from rag import documents, faiss_folder as store
from rag.config import load_settings
from rag.documents import AddResult, add_documents, remove_documents
from rag.errors import ConfigError, IndexLockedError, RagError, UploadError
from rag.pipeline import Rag

DANUBE = b"The Danube flows through ten countries.\nVienna and Budapest stand on the Danube.\n"
HEKLA = b"Hekla is the most active volcano in southern Iceland.\n"


def word_file(*paragraphs: str) -> bytes:
    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def settings(make_settings):
    made = make_settings(generator="extractive", relevance_floor=0.05)
    made.seeds_dir.mkdir()
    return made


@pytest.fixture
def add(settings, hashing_embedder):
    def run(files, *, overwrite: bool = False, using=None) -> list[AddResult]:
        return add_documents(files, using or settings, overwrite=overwrite, embedder=hashing_embedder)

    return run


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root except the index (which builds are free to rewrite)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith("index/")
    }


def indexed(settings) -> dict[str, int]:
    manifest = store.read_manifest(settings.index_dir)
    return {} if manifest is None else {k: len(v.chunk_ids) for k, v in manifest.documents.items()}


def test_good_files_are_written_and_indexed(settings, add, pdf_bytes):
    pdf = pdf_bytes([["Mount Fuji is 3776 metres high."]])
    results = add([("rivers.txt", DANUBE), ("notes.md", b"# Notes\n\nKatla erupted in 1918.\n"),
                   ("fuji.pdf", pdf), ("report.docx", word_file("The Porto office opens next year."))])
    assert [(r.name, r.state, r.reason) for r in results] == [
        ("rivers.txt", "indexed", None), ("notes.md", "indexed", None),
        ("fuji.pdf", "indexed", None), ("report.docx", "indexed", None),
    ]
    assert all(r.chunks >= 1 for r in results)
    assert (settings.seeds_dir / "rivers.txt").read_bytes() == DANUBE
    assert (settings.seeds_dir / "fuji.pdf").read_bytes() == pdf
    assert indexed(settings) == {r.name: r.chunks for r in results}
    assert sorted(p.name for p in settings.seeds_dir.iterdir()) == sorted(r.name for r in results)
    answer = Rag(settings).ask("Which cities stand on the Danube?")
    assert answer.citations[0].source == "rivers.txt"


def test_results_are_frozen_models(add):
    [result] = add([("a.txt", HEKLA)])
    with pytest.raises(Exception):
        result.state = "refused"  # type: ignore[misc]
    assert AddResult.model_validate(result.model_dump()) == result


def test_paths_are_added_by_their_own_name(settings, add, in_tmp):
    incoming = in_tmp / "incoming"
    incoming.mkdir()
    (incoming / "rivers.txt").write_bytes(DANUBE)
    results = add([incoming / "rivers.txt", incoming / "missing.txt", incoming])
    assert [(r.name, r.state) for r in results] == [
        ("rivers.txt", "indexed"), ("missing.txt", "refused"), ("incoming", "refused"),
    ]
    assert "no such file" in results[1].reason
    assert "not a file" in results[2].reason
    assert (settings.seeds_dir / "rivers.txt").read_bytes() == DANUBE


RENAMED = {
    "photo.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "NUL bytes"),
    "program.md": (bytes(range(1, 32)) * 40, "does not read as text"),
    "page.html": (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00", "NUL bytes"),
    "paper.pdf": (b"Just some text pretending to be a PDF.\n", "%PDF-"),
    "letter.docx": (b"%PDF-1.4\nnot a word file\n", "not a zip archive"),
    "archive.docx": (None, "no word/document.xml"),
    "locked.docx": (None, "password-protected"),
}


def _renamed_bytes(name: str) -> bytes:
    data = RENAMED[name][0]
    if data is not None:
        return data
    if name == "archive.docx":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("readme.txt", "a plain zip")
        return out.getvalue()
    from rag.loaders import OLE_MAGIC

    return OLE_MAGIC + b"\x00" * 504 + "EncryptionInfo".encode("utf-16-le") + b"\x00" * 512


@pytest.mark.parametrize("name", sorted(RENAMED))
def test_a_renamed_binary_is_refused_with_a_clear_message(settings, add, name):
    [result] = add([(name, _renamed_bytes(name))])
    assert result.state == "refused"
    assert result.reason.startswith(name) and RENAMED[name][1] in result.reason
    assert list(settings.seeds_dir.iterdir()) == []
    assert store.read_manifest(settings.index_dir) is None, "nothing written, nothing indexed"


def test_a_word_file_that_does_not_parse_is_refused_before_it_is_written(settings, add):
    good = word_file("Fine text.")
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            body = b"<w:document><w:body>" if info.filename == "word/document.xml" else src.read(info)
            dst.writestr(info.filename, body)
    results = add([("broken.docx", broken.getvalue()), ("empty.docx", word_file()),
                   ("blank.txt", b"  \n\n\t\n"), ("nothing.txt", b"")])
    assert [r.state for r in results] == ["refused"] * 4
    assert "not a readable Word document" in results[0].reason
    assert "empty" in results[1].reason
    assert "no text" in results[2].reason
    assert "empty" in results[3].reason
    assert list(settings.seeds_dir.iterdir()) == []


def test_legacy_encoded_text_is_accepted(settings, add):
    text = "Le café est très bon. À Noël, nous mangeons une bûche glacée.\n" * 3
    [result] = add([("cafe.txt", text.encode("cp1252"))])
    assert result.state == "indexed"


def test_an_oversize_file_is_refused_and_the_others_added(make_settings, add):
    small = make_settings(upload_max_mb=0.01)  # 10 KiB
    small.seeds_dir.mkdir(exist_ok=True)
    big = b"A line of perfectly good text about rivers and mountains.\n" * 400  # ~23 KB
    results = add([("big.txt", big), ("rivers.txt", DANUBE)], using=small)
    assert [(r.name, r.state) for r in results] == [("big.txt", "refused"), ("rivers.txt", "indexed")]
    assert "RAG_UPLOAD_MAX_MB" in results[0].reason and "limit per file" in results[0].reason
    assert not (small.seeds_dir / "big.txt").exists()


def test_an_oversize_path_is_not_even_read(make_settings, add, in_tmp, monkeypatch):
    small = make_settings(upload_max_mb=0.01)
    small.seeds_dir.mkdir(exist_ok=True)
    (in_tmp / "big.txt").write_bytes(b"x" * 20_000)
    real = Path.read_bytes

    def guarded(self: Path) -> bytes:
        assert self.name != "big.txt", "an oversize file was read"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    [result] = add([in_tmp / "big.txt"], using=small)
    assert result.state == "refused" and "RAG_UPLOAD_MAX_MB" in result.reason


def test_an_upload_over_the_total_limit_is_refused_whole(make_settings, add):
    limited = make_settings(upload_max_mb=0.02, upload_max_total_mb=0.02)  # 20 KiB each and in all
    limited.seeds_dir.mkdir(exist_ok=True)
    half = b"Lines of text, each one well within the limit per file.\n" * 300  # ~17 KB: fits alone
    with pytest.raises(UploadError, match="RAG_UPLOAD_MAX_TOTAL_MB") as info:
        add([("one.txt", half), ("two.txt", half)], using=limited)
    assert "nothing was added" in str(info.value)
    assert list(limited.seeds_dir.iterdir()) == []
    [alone] = add([("one.txt", half)], using=limited)
    assert alone.state == "indexed"


BAD_NAMES = {
    "../../x.txt": "without folders or '..'",
    "..\\..\\x.txt": "without folders or '..'",
    "/etc/x.txt": "without folders or '..'",
    "sub/x.txt": "without folders or '..'",
    "..": "without folders or '..'",
    ".hidden": "hidden",
    ".hidden.txt": "hidden",
    "CON.txt": "reserved device name",
    "nul.md": "reserved device name",
    "Com1.txt": "reserved device name",
    "lpt9.tar.txt": "reserved device name",
    "tab\tname.txt": "control characters",
    "line\nbreak.txt": "control characters",
    "nul\x00byte.txt": "control characters",
    "rtl\u202etxt.exe.txt": "control characters",
    "x" * 250 + ".txt": "limited to 200 bytes",
    "what?.txt": "not allowed",
    "pipe|name.txt": "not allowed",
    "trailing.txt.": "may not end with",
    "trailing.txt ": "may not end with",
    "   ": "empty",
    "noextension": "not accepted",
    "setup.exe": "not accepted",
}


@pytest.mark.parametrize("name", list(BAD_NAMES), ids=[repr(n)[:40] for n in BAD_NAMES])
def test_bad_names_are_refused_and_nothing_is_written_anywhere(settings, add, in_tmp, name):
    before = snapshot(in_tmp)
    [result] = add([(name, DANUBE)])
    assert result.state == "refused"
    assert BAD_NAMES[name] in result.reason, result.reason
    assert "\n" not in result.reason and "\x00" not in result.reason
    assert snapshot(in_tmp) == before
    for place in (in_tmp, in_tmp.parent, in_tmp.parent.parent, Path("/etc")):
        assert not (place / "x.txt").exists()


def test_a_symlink_out_of_the_seeds_folder_is_never_written_through(settings, add, in_tmp):
    outside = in_tmp / "outside.txt"
    outside.write_bytes(b"precious\n")
    os.symlink(outside, settings.seeds_dir / "link.txt")
    [result] = add([("link.txt", DANUBE)], overwrite=True)
    assert result.state == "refused" and "outside the seeds folder" in result.reason
    assert outside.read_bytes() == b"precious\n"


def test_overwrite_is_refused_unless_asked(settings, add):
    [first] = add([("rivers.txt", DANUBE)])
    assert first.state == "indexed"
    [again] = add([("rivers.txt", HEKLA)])
    assert again.state == "refused"
    assert "already exists" in again.reason and "--overwrite" in again.reason
    assert (settings.seeds_dir / "rivers.txt").read_bytes() == DANUBE
    [replaced] = add([("rivers.txt", HEKLA)], overwrite=True)
    assert replaced.state == "indexed"
    assert (settings.seeds_dir / "rivers.txt").read_bytes() == HEKLA
    chunks = store.load(settings.index_dir).chunks
    assert [c.text for c in chunks] == [HEKLA.decode().strip()]


def test_a_name_given_twice_in_one_upload_is_added_once(settings, add):
    results = add([("a.txt", DANUBE), ("a.txt", HEKLA)], overwrite=True)
    assert [r.state for r in results] == ["indexed", "refused"]
    assert "given twice" in results[1].reason
    assert (settings.seeds_dir / "a.txt").read_bytes() == DANUBE


def test_upload_types_limit_what_is_accepted(make_settings, add, pdf_bytes):
    text_only = make_settings(upload_types=".txt,md")
    text_only.seeds_dir.mkdir(exist_ok=True)
    assert text_only.upload_types == (".txt", ".md")
    results = add([("a.txt", DANUBE), ("b.pdf", pdf_bytes([["Some text."]]))], using=text_only)
    assert [r.state for r in results] == ["indexed", "refused"]
    assert ".pdf not accepted" in results[1].reason and ".txt, .md" in results[1].reason


def test_upload_settings_from_the_environment(in_tmp, monkeypatch):
    defaults = load_settings()
    assert defaults.uploads_enabled is True
    assert ".docx" in defaults.upload_types and ".pdf" in defaults.upload_types
    assert (defaults.upload_max_mb, defaults.upload_max_total_mb) == (20, 100)
    monkeypatch.setenv("RAG_UPLOAD_TYPES", " TXT, .Md ,")
    monkeypatch.setenv("RAG_UPLOADS_ENABLED", "false")
    loaded = load_settings()
    assert loaded.upload_types == (".txt", ".md") and loaded.uploads_enabled is False
    monkeypatch.setenv("RAG_UPLOAD_TYPES", ".txt,.exe")
    with pytest.raises(ConfigError, match=r"RAG_UPLOAD_TYPES: \.exe files cannot be read"):
        load_settings()


def test_disabled_uploads_are_refused_naming_the_setting(make_settings, hashing_embedder):
    off = make_settings(uploads_enabled=False)
    off.seeds_dir.mkdir()
    (off.seeds_dir / "kept.txt").write_bytes(DANUBE)
    with pytest.raises(UploadError, match="RAG_UPLOADS_ENABLED") as info:
        add_documents([("a.txt", DANUBE)], off, embedder=hashing_embedder)
    assert isinstance(info.value, RagError)
    with pytest.raises(UploadError, match="RAG_UPLOADS_ENABLED"):
        remove_documents(["kept.txt"], off, embedder=hashing_embedder)
    assert sorted(p.name for p in off.seeds_dir.iterdir()) == ["kept.txt"]


def test_a_failed_write_leaves_no_temporary_file(settings, add, monkeypatch):
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(documents.os, "fsync", broken_fsync)
    [result] = add([("rivers.txt", DANUBE)])
    assert result.state == "refused" and "No space left on device" in result.reason
    assert list(settings.seeds_dir.iterdir()) == []


def test_the_file_is_written_through_a_temporary_name_in_the_seeds_folder(settings, add, monkeypatch):
    seen: list[tuple[str, str]] = []
    real_link = os.link

    def spy(src, dst, *args, **kwargs):
        seen.append((str(src), str(dst)))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(documents.os, "link", spy)
    add([("rivers.txt", DANUBE)])
    [(src, dst)] = seen
    assert Path(src).parent == settings.seeds_dir.resolve() and Path(src).name.startswith(".upload-")
    assert Path(dst) == settings.seeds_dir.resolve() / "rivers.txt"
    assert not Path(src).exists()


def test_a_file_that_cannot_be_indexed_after_writing_is_reported_skipped(settings, add, monkeypatch):
    def locked(*args, **kwargs):
        raise IndexLockedError("another `rag index` holds the index lock; wait for it")

    monkeypatch.setattr(documents, "build_index", locked)
    [result] = add([("rivers.txt", DANUBE)])
    assert result.state == "skipped"
    assert "saved, but not indexed yet" in result.reason and "lock" in result.reason
    assert (settings.seeds_dir / "rivers.txt").exists()


def test_remove_takes_the_document_out_of_the_folder_and_the_index(settings, add, hashing_embedder):
    add([("rivers.txt", DANUBE), ("hekla.txt", HEKLA)])
    rag = Rag(settings, embedder=hashing_embedder)
    assert rag.ask("Which cities stand on the Danube?").citations[0].source == "rivers.txt"
    assert remove_documents(["rivers.txt"], settings, embedder=hashing_embedder) == ["rivers.txt"]
    assert not (settings.seeds_dir / "rivers.txt").exists()
    assert set(indexed(settings)) == {"hekla.txt"}
    fresh = Rag(settings, embedder=hashing_embedder)  # a running one notices the new build on its own
    assert fresh.indexed_sources() == ["hekla.txt"]
    hits = fresh.retrieve("Which cities stand on the Danube?")
    assert all(h.chunk.source != "rivers.txt" for h in hits)


def test_remove_checks_every_name_before_removing_any(settings, add, hashing_embedder, in_tmp):
    add([("rivers.txt", DANUBE)])
    (in_tmp / "outside.txt").write_bytes(b"precious\n")
    (settings.seeds_dir / "sub").mkdir()
    (settings.seeds_dir / "sub" / "deep.txt").write_bytes(HEKLA)
    for bad, says in [("../outside.txt", "without '..'"), ("missing.txt", "no such document"),
                      (".hidden", "hidden"), ("sub", "no such document"), ("/etc/passwd", "as listed")]:
        with pytest.raises(UploadError, match=says):
            remove_documents(["rivers.txt", bad], settings, embedder=hashing_embedder)
    assert (settings.seeds_dir / "rivers.txt").exists() and (in_tmp / "outside.txt").exists()
    assert remove_documents(["sub/deep.txt"], settings, embedder=hashing_embedder) == ["sub/deep.txt"]
    assert not (settings.seeds_dir / "sub" / "deep.txt").exists()
