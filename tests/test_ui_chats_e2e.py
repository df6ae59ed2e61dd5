"""Saved conversations end to end: `rag serve` with two logins, driven by headless Chromium.

Asked questions survive a reload; a reopened conversation's citations open their passages and a
follow-up is answered in context; rename, export and delete work; each user sees only their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ui_helpers import CHROMIUM, ask, launch_chromium, login, running_server, save_screenshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

ALICE, BOB = ("alice", "pw-alice-1"), ("bob", "pw-bob-2")
QWEN_QUESTION = "Which Qwen3 variation is described as coding-proficient?"
FOLLOW_UP = "What about its languages?"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve-chats")
    logins = ",".join(f"{user}:{password}" for user, password in (ALICE, BOB))
    with running_server(workdir, generator="extractive", watch="false", auth=logins) as running:
        yield running


def signed_in(browser, server, user: tuple[str, str]):
    context = browser.new_context(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("input[type=password]")
    login(page, *user)
    page.wait_for_selector("#question textarea", timeout=30_000)
    return context, page


def sources_on_cards(page) -> list[tuple[str, str]]:
    """(file, lines) of each source card in the panel."""
    cards = page.locator("#answer-citations [data-cite]")
    return [(card.locator(".rag-cite-file").inner_text(), card.locator(".rag-cite-lines").inner_text())
            for card in cards.all()]


@pytest.mark.timeout(150)
def test_conversations_are_saved_reopened_continued_renamed_exported_and_deleted(browser, server, tmp_path: Path):
    context, page = signed_in(browser, server, ALICE)
    rows = page.locator("#chat-list [data-chat]")
    assert "Qwen3-Coder" in ask(page, QWEN_QUESTION).inner_text()
    ask(page, FOLLOW_UP)
    sync_api.expect(rows).to_have_count(1)

    page.reload()  # the page forgets; the server does not
    page.wait_for_selector("#question textarea")
    assert page.locator("#chat .rag-final").count() == 0
    sync_api.expect(rows).to_have_count(1)
    sync_api.expect(rows.first).to_contain_text("Which Qwen3 variation")

    rows.first.click()
    sync_api.expect(page.locator("#chat .rag-final")).to_have_count(2)
    sync_api.expect(page.locator("#answer-citations .rag-panel-head")).to_contain_text(FOLLOW_UP)
    page.locator("#chat .rag-final").first.click()  # the first answer's sources, as when asked
    card = page.locator("#answer-citations [data-cite]").first
    sync_api.expect(card).to_be_visible()
    card.click()
    sync_api.expect(page.locator("#passage-viewer .rag-hit").first).to_be_visible(timeout=20_000)
    assert "coding-proficient" in page.locator("#passage-viewer .rag-quote").first.inner_text()

    follow_up = ask(page, "And its context length?")
    assert "(about: " in follow_up.locator(".rag-standalone").inner_text(), "answered with the history"
    assert follow_up.locator(".rag-error").count() == 0
    sync_api.expect(rows).to_have_count(1)  # the same conversation, continued

    page.locator("#chat-title input, #chat-title textarea").first.fill("Qwen notes")
    page.locator("#chat-rename").click()
    sync_api.expect(rows.first.locator(".rag-chat-title")).to_have_text("Qwen notes")

    page.locator("#chat .rag-final").first.click()
    sync_api.expect(page.locator("#answer-citations .rag-panel-head")).to_contain_text(QWEN_QUESTION)
    cited = sources_on_cards(page)
    with page.expect_download() as download:
        page.locator("#chat-export").click()
    markdown = Path(download.value.path()).read_text(encoding="utf-8")
    assert markdown.startswith("# Qwen notes\n") and markdown.count("\n## ") == 3
    first_answer = markdown.split("\n## ")[1]
    listed = re.findall(r"^- \[\d+\] `([^`]+)`, (lines? [\d–]+)", first_answer, flags=re.M)
    assert listed and listed == [(file, lines.split(" · ")[0]) for file, lines in cited]
    save_screenshot(page, "chat-conversations.png")

    other, bobs_page = signed_in(browser, server, BOB)
    sync_api.expect(bobs_page.locator("#chat-list")).to_contain_text("No saved conversations")
    assert "Qwen" not in bobs_page.locator("#chat-list").inner_text()
    ask(bobs_page, QWEN_QUESTION)
    sync_api.expect(bobs_page.locator("#chat-list [data-chat]")).to_have_count(1)
    other.close()

    page.reload()
    page.wait_for_selector("#question textarea")
    sync_api.expect(rows).to_have_count(1)  # Alice still sees only hers
    sync_api.expect(rows.first).to_contain_text("Qwen notes")
    rows.first.click()
    sync_api.expect(page.locator("#chat .rag-final")).to_have_count(3)
    page.locator("#chat-delete").click()
    sync_api.expect(page.locator("#chat-delete-prompt")).to_contain_text("Qwen notes")
    page.locator("#chat-delete-yes").click()
    sync_api.expect(page.locator("#chat-list")).to_contain_text("No saved conversations")
    sync_api.expect(page.locator("#chat .rag-final")).to_have_count(0)
    context.close()
