"""The documents panel end to end: files added and removed through the page of a real `rag serve`
(extractive answers, the packaged embedding model, a private copy of the seeds), driven by
Debian's Chromium through Playwright."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from ui_helpers import CHROMIUM, ask, launch_chromium, running_server, save_screenshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api")
docx = pytest.importorskip("docx")

FERRY_QUESTION = "When does the Vestmark ferry to Holmvik island leave each morning?"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
INDEXING_MS = 90_000


def ferry_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Holmvik island travel guide", level=1)
    document.add_paragraph("Holmvik is a small island in the northern archipelago with one harbour.")
    document.add_paragraph("The Vestmark ferry to Holmvik island leaves at 7:40 every morning and costs 12 euros.")
    document.add_paragraph("Bicycles ride free on the ferry; cars must be booked a day ahead.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


SOURDOUGH_MD = (
    "# Sourdough notes\n\n"
    "A sourdough starter is fed rye flour and water every twelve hours.\n\n"
    "The loaf proves overnight in the fridge before it is baked in a cast-iron pot.\n"
)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No watcher: what the page shows is the page's own doing. A small per-file limit for the
    # oversized upload.
    workdir = tmp_path_factory.mktemp("serve-documents")
    with running_server(workdir, generator="extractive", watch="false", upload_max_mb="1") as running:
        yield running


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1360, "height": 1100})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#question textarea")
    # The list is filled once the page has loaded (no index yet here: nothing has built one).
    sync_api.expect(page.locator("#documents-list")).to_contain_text("o", timeout=60_000)
    yield page
    context.close()


def upload_row(page, name: str):
    return page.locator("#documents-progress .rag-doc-row").filter(
        has=page.locator(".rag-doc-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def listed(page, name: str):
    return page.locator(f'#documents-list .rag-doc-row[data-doc="{name}"]')


@pytest.mark.timeout(180)
def test_upload_ask_remove_then_refused(page, server, tmp_path: Path):
    (tmp_path / "ferry.docx").write_bytes(ferry_docx())
    (tmp_path / "sourdough.md").write_text(SOURDOUGH_MD, encoding="utf-8")

    page.locator("#doc-upload input[type=file]").set_input_files(
        [str(tmp_path / "sourdough.md"), str(tmp_path / "ferry.docx")]
    )

    for name in ("sourdough.md", "ferry.docx"):
        row = upload_row(page, name)
        sync_api.expect(row.locator(".rag-state")).to_have_text("indexed", timeout=INDEXING_MS)
        assert re.fullmatch(r"[1-9]\d* chunks?", row.locator(".rag-doc-chunks").inner_text())
        sync_api.expect(listed(page, name).locator(".rag-doc-chunks")).to_have_text(re.compile(r"[1-9]\d* chunks?"))
    assert (server.seeds_dir / "ferry.docx").read_bytes() == (tmp_path / "ferry.docx").read_bytes()
    assert (server.seeds_dir / "sourdough.md").is_file()
    save_screenshot(page, "documents-uploaded.png")

    message = ask(page, FERRY_QUESTION)
    assert message.locator(".rag-refusal").count() == 0
    assert "7:40" in message.locator(".rag-answer").inner_text()
    cards = page.locator("#answer-citations [data-cite]")
    assert cards.filter(has_text="ferry.docx").count() >= 1
    assert "ferry.docx" in message.locator(".rag-sources").inner_text()

    listed(page, "ferry.docx").locator("[data-remove]").click()
    sync_api.expect(page.locator("#remove-prompt")).to_contain_text("ferry.docx")
    page.locator("#remove-yes").click()
    sync_api.expect(upload_row(page, "ferry.docx").locator(".rag-state")).to_have_text("removed", timeout=INDEXING_MS)
    sync_api.expect(listed(page, "ferry.docx")).to_have_count(0)
    assert listed(page, "sourdough.md").count() == 1
    assert not (server.seeds_dir / "ferry.docx").exists()

    again = ask(page, FERRY_QUESTION)
    assert again.locator(".rag-refusal").count() == 1
    assert "7:40" not in again.inner_text()


@pytest.mark.timeout(120)
def test_renamed_oversized_and_escaping_files_are_refused_with_reasons(page, server):
    before = sorted(p.name for p in server.seeds_dir.iterdir())
    big = b"Plain text that is far too long for the limit.\n" * (2 * 1024 * 1024 // 48 + 1)  # 2 MB

    # Playwright's payloads: the browser sends these names as given.
    page.locator("#doc-upload input[type=file]").set_input_files([
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": PNG},
        {"name": "big.txt", "mimeType": "text/plain", "buffer": big},
        {"name": "../../x.txt", "mimeType": "text/plain", "buffer": b"Escaping the seeds folder.\n"},
    ])

    reasons = {
        "notes.txt": "binary",
        "big.txt": "over the 1.0 MB limit per file (RAG_UPLOAD_MAX_MB)",
        "../../x.txt": "plain file name, without folders or '..'",
    }
    for name, reason in reasons.items():
        row = upload_row(page, name)
        sync_api.expect(row.locator(".rag-state")).to_have_text("refused", timeout=INDEXING_MS)
        assert reason in row.locator(".rag-doc-reason").inner_text()
    save_screenshot(page, "documents-refused.png")

    assert sorted(p.name for p in server.seeds_dir.iterdir()) == before
    for folder in (server.seeds_dir, server.seeds_dir.parent, server.seeds_dir.parent.parent):
        assert not (folder / "x.txt").exists()
    assert not list(server.seeds_dir.parent.rglob("x.txt"))
    assert not list(server.seeds_dir.rglob("notes.txt")) and not list(server.seeds_dir.rglob("big.txt"))
