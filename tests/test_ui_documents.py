"""The documents panel without a browser: its HTML as pure functions, its handlers called directly
over a hashing-embedder index, and its upload route behind the login."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fakes import CORPUS, write_corpus
from ui.documents_view import (
    UPLOADS_OFF,
    FileState,
    IndexedDocument,
    render_document_list,
    render_file_states,
    render_remove_prompt,
    upload_help,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
EVIL = '<img src=x onerror="alert(1)">.txt'
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
GLACIER = b"The Okjokull glacier was declared dead in 2014 after it stopped moving.\n"


# -- the HTML ------------------------------------------------------------------------------------
def test_view_imports_no_gradio():
    code = "import sys, ui.documents_view; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_file_states_show_each_state_its_chunks_and_reason():
    html = render_file_states([
        FileState("a.md", "indexing"),
        FileState("b.docx", "indexed", chunks=3),
        FileState("one.txt", "indexed", chunks=1),
        FileState("c.txt", "refused", reason="c.txt: contains NUL bytes, so it is a binary file"),
        FileState("../x.txt", "refused", reason="'../x.txt': give a plain file name"),
        FileState("d.pdf", "skipped", reason="d.pdf: no text (a scanned PDF?)"),
    ])
    assert '<li class="rag-doc-row" data-state="indexing"><span class="rag-doc-name">a.md</span>' in html
    assert "indexing…" in html
    assert '<span class="rag-doc-chunks">3 chunks</span>' in html and ">1 chunk<" in html
    # The reason without the name the row already shows.
    assert '<div class="rag-doc-reason">contains NUL bytes, so it is a binary file</div>' in html
    assert '<div class="rag-doc-reason">give a plain file name</div>' in html
    assert "rag-state-skipped" in html and "no text (a scanned PDF?)" in html
    assert render_file_states([]) == ""


def test_names_and_reasons_are_escaped():
    states = render_file_states([FileState(EVIL, "refused", reason=f"{EVIL}: <b>bad</b>")])
    listing = render_document_list([IndexedDocument(EVIL, 2, "txt")], can_remove=True)
    for html in (states, listing, render_remove_prompt(EVIL)):
        assert "<img" not in html and "<b>bad" not in html
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt" in html
    # The name sent back by the remove button cannot break out of its attribute.
    assert 'data-remove="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.txt"' in listing


def test_document_list_with_and_without_remove_buttons():
    docs = [IndexedDocument("notes/a.txt", 4, "txt"), IndexedDocument("b.docx", 1, "docx")]
    html = render_document_list(docs, can_remove=True)
    assert "2 documents" in html
    assert 'data-doc="notes/a.txt"' in html and ">4 chunks<" in html and ">1 chunk<" in html
    assert html.count("data-remove=") == 2 and 'data-remove="b.docx"' in html
    assert "data-remove" not in render_document_list(docs, can_remove=False)
    assert "No index yet" in render_document_list(None, can_remove=True)
    assert "damaged" in render_document_list(None, can_remove=True, error="the index is damaged")
    assert "no documents" in render_document_list([], can_remove=True)


def test_upload_help_names_types_and_limits():
    html = upload_help((".txt", ".docx"), 1.0, 100.0)
    assert ".txt, .docx" in html and "1 MB a file" in html and "100 MB an upload" in html
    assert "RAG_UPLOADS_ENABLED=false" in UPLOADS_OFF


# -- the handlers --------------------------------------------------------------------------------
gr = pytest.importorskip("gradio")

from rag.pipeline import Rag  # noqa: E402
from ui.documents import REMOVE_OUTPUTS, UPLOAD_OUTPUTS, DocumentHandlers, received  # noqa: E402
from ui.layout import build_app  # noqa: E402


def is_skip(value: object) -> bool:
    return isinstance(value, dict) and value == {"__type__": "update"}


@pytest.fixture
def uploads_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Gradio's upload folder for this test (where the server keeps what browsers send)."""
    folder = tmp_path / "gradio-uploads"
    folder.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture
def make_rag(make_settings, in_tmp: Path):
    def make(**overrides) -> Rag:
        write_corpus(in_tmp / "seeds", CORPUS)
        rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0, **overrides))
        rag.index()
        return rag

    return make


@pytest.fixture
def docs(make_rag) -> DocumentHandlers:
    return DocumentHandlers(make_rag(upload_max_mb=0.1))


def sent(uploads_dir: Path, name: str, data: bytes, stored_as: str | None = None) -> dict:
    """What Gradio hands the upload event for one file: its stored copy and the browser's name."""
    folder = uploads_dir / f"upload-{len(list(uploads_dir.iterdir()))}"
    folder.mkdir()
    path = folder / (stored_as or Path(name).name or "file")
    path.write_bytes(data)
    return {"path": str(path), "orig_name": name, "size": len(data), "meta": {"_type": "gradio.FileData"}}


def frames(docs: DocumentHandlers, files) -> list[dict]:
    return [dict(zip(UPLOAD_OUTPUTS, out)) for out in docs.upload(files)]


def word_file(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_upload_shows_indexing_then_indexed_and_the_next_question_uses_it(docs, uploads_dir):
    rag = docs.rag
    rag.ask("When did Hekla erupt?")  # a build is loaded and in use before the upload
    files = [sent(uploads_dir, "glacier.txt", GLACIER), sent(uploads_dir, "report.docx", word_file(
        "Quarterly report", "The Lisbon office opened in March and employs forty engineers."))]

    out = frames(docs, files)

    first, last = out[0], out[-1]
    assert first["doc_progress"].count('data-state="indexing"') == 2 and "indexing…" in first["doc_progress"]
    assert first["doc_files"] is None, "the drop zone is cleared at once"
    assert is_skip(first["doc_list"])
    assert last["doc_progress"].count('data-state="indexed"') == 2
    assert 'data-doc="glacier.txt"' in last["doc_list"] and 'data-doc="report.docx"' in last["doc_list"]
    assert (rag.settings.seeds_dir / "glacier.txt").read_bytes() == GLACIER
    # The next question is answered from the new build, without a rebuild or a restart.
    answer = rag.ask("Which glacier was declared dead?")
    assert any(c.source == "glacier.txt" for c in answer.citations)
    chunks = {d.name: d.chunks for d in docs.documents()}
    assert chunks["report.docx"] >= 1 and chunks["glacier.txt"] == 1


def test_refused_files_say_why_and_nothing_is_written(docs, uploads_dir, in_tmp):
    before = sorted(p.name for p in docs.rag.settings.seeds_dir.rglob("*"))
    files = [
        sent(uploads_dir, "notes.txt", PNG),
        sent(uploads_dir, "big.txt", b"too long for the limit\n" * 9000),  # 0.2 MB
        sent(uploads_dir, "../../x.txt", b"escaping\n", stored_as="x.txt"),  # Gradio keeps only x.txt
        sent(uploads_dir, "run.exe", b"MZ\x90\x00"),
    ]

    last = frames(docs, files)[-1]["doc_progress"]

    assert last.count('data-state="refused"') == 4
    assert "binary file" in last
    assert "0.2 MB is over the 0.1 MB limit per file (RAG_UPLOAD_MAX_MB)" in last
    assert "give a plain file name, without folders or &#x27;..&#x27;" in last
    assert ".exe not accepted" in last
    assert sorted(p.name for p in docs.rag.settings.seeds_dir.rglob("*")) == before
    assert [p for p in in_tmp.rglob("x.txt") if not p.is_relative_to(uploads_dir)] == []


def test_paths_outside_the_upload_folder_are_never_read(docs, uploads_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("The vault code is 4417.\n", encoding="utf-8")
    files = [{"path": str(secret), "orig_name": "secret.txt"},
             {"path": str(uploads_dir / ".." / "secret.txt"), "orig_name": "secret.txt"}]

    assert [u.path for u in received(files)] == [None, None]
    last = frames(docs, files)[-1]["doc_progress"]
    assert last.count('data-state="refused"') == 2 and "not a file this server received" in last
    assert not (docs.rag.settings.seeds_dir / "secret.txt").exists()


def test_an_upload_waits_for_another_change_and_says_so(docs, uploads_dir):
    docs._changing.acquire()  # another upload or removal is running
    running = docs.upload([sent(uploads_dir, "glacier.txt", GLACIER)])
    queued = dict(zip(UPLOAD_OUTPUTS, next(running)))
    assert 'data-state="queued"' in queued["doc_progress"]
    assert not (docs.rag.settings.seeds_dir / "glacier.txt").exists()

    threading.Timer(0.2, docs._changing.release).start()
    rest = [dict(zip(UPLOAD_OUTPUTS, out)) for out in running]
    assert 'data-state="indexing"' in rest[0]["doc_progress"]
    assert 'data-state="indexed"' in rest[-1]["doc_progress"]


def test_an_upload_over_the_total_limit_is_refused_as_a_whole(make_rag, uploads_dir):
    docs = DocumentHandlers(make_rag(upload_max_mb=0.1, upload_max_total_mb=0.25))
    files = [sent(uploads_dir, f"part{n}.txt", b"a line of plain text\n" * 4000) for n in range(4)]  # 84 KB each

    last = frames(docs, files)[-1]["doc_progress"]

    assert last.count('data-state="refused"') == 4
    assert "RAG_UPLOAD_MAX_TOTAL_MB" in last
    assert not list(docs.rag.settings.seeds_dir.glob("part*.txt"))


def test_remove_asks_first_then_removes_and_the_index_follows(docs):
    rag = docs.rag
    assert docs.ask_remove("no-such.txt")[1]["visible"] is False, "only names the index holds"
    assert docs.ask_remove({"not": "a name"})[0] is None

    pending, confirm, prompt = docs.ask_remove("volcanoes.txt")
    assert pending == "volcanoes.txt" and confirm["visible"] is True and "volcanoes.txt" in prompt
    assert docs.cancel_remove()[0] is None and (rag.settings.seeds_dir / "volcanoes.txt").exists()

    out = [dict(zip(REMOVE_OUTPUTS, frame)) for frame in docs.remove(pending)]

    assert 'data-state="removing"' in out[0]["doc_progress"] and out[0]["remove_confirm"]["visible"] is False
    assert 'data-state="removed"' in out[-1]["doc_progress"]
    assert 'data-doc="volcanoes.txt"' not in out[-1]["doc_list"] and 'data-doc="bread.md"' in out[-1]["doc_list"]
    assert not (rag.settings.seeds_dir / "volcanoes.txt").exists()
    assert "volcanoes.txt" not in rag.indexed_sources()


def test_a_removal_that_fails_says_why(docs):
    (docs.rag.settings.seeds_dir / "bread.md").unlink()  # gone behind the page's back
    last = dict(zip(REMOVE_OUTPUTS, list(docs.remove("bread.md"))[-1]))
    assert 'data-state="failed"' in last["doc_progress"] and "no such document" in last["doc_progress"]


def test_uploads_off_the_page_has_no_upload_and_nothing_can_be_changed(make_rag, uploads_dir):
    rag = make_rag(uploads_enabled=False)
    demo = build_app(rag)
    components = {c.get("props", {}).get("elem_id"): c["type"] for c in demo.get_config_file()["components"]}
    assert "doc-upload" not in components and components["uploads-off"] == "html"
    assert not [c for c in demo.get_config_file()["components"] if c["type"] in ("file", "uploadbutton")]

    docs = DocumentHandlers(rag)
    assert "data-remove" not in docs.listing() and 'data-doc="volcanoes.txt"' in docs.listing()
    last = frames(docs, [sent(uploads_dir, "glacier.txt", GLACIER)])[-1]["doc_progress"]
    assert "RAG_UPLOADS_ENABLED=false" in last and not (rag.settings.seeds_dir / "glacier.txt").exists()
    assert docs.ask_remove("volcanoes.txt")[0] is None
    assert (rag.settings.seeds_dir / "volcanoes.txt").exists()


def test_page_has_the_documents_panel(make_rag):
    demo = build_app(make_rag())
    components = {c.get("props", {}).get("elem_id"): c for c in demo.get_config_file()["components"]}
    assert components["doc-upload"]["props"]["file_count"] == "multiple"
    assert {"documents", "documents-progress", "documents-list", "remove-confirm", "remove-yes", "remove-no"} <= set(components)


def test_upload_route_and_events_need_the_login(make_rag, uploads_dir):
    from ui_helpers import free_port

    demo = build_app(make_rag(auth="reader:open-sesame-42"))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, auth=("reader", "open-sesame-42"),
                prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        base = f"http://127.0.0.1:{port}/gradio_api"
        body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.txt\"\r\n"
                b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n")
        upload = urllib.request.Request(f"{base}/upload", data=body,
                                        headers={"Content-Type": "multipart/form-data; boundary=b"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(upload, timeout=10)
        assert refused.value.code == 401
        assert not list(uploads_dir.rglob("x.txt")), "nothing was stored"

        fn_index = next(i for i, d in enumerate(demo.config["dependencies"])
                        if d.get("targets") and d["targets"][0][1] == "upload")
        join = urllib.request.Request(
            f"{base}/queue/join",
            data=json.dumps({"data": [[{"path": "/etc/hostname", "orig_name": "h.txt"}]], "fn_index": fn_index,
                             "session_hash": "anonymous", "event_data": None, "trigger_id": None}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(join, timeout=10)
        assert refused.value.code == 401

        # The refusal is the login's doing: signed in, the same upload is stored.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/login", method="POST",
                                           data=b"username=reader&password=open-sesame-42"), timeout=10)
        with opener.open(upload, timeout=10) as response:
            assert response.status == 200
        assert [p.read_bytes() for p in uploads_dir.rglob("x.txt")] == [b"hello"]
    finally:
        demo.close()
