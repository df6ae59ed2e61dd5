"""The chat behind RAG_AUTH, and a planted API key that must never reach the page or the log."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request

import pytest

from ui_helpers import CHROMIUM, ask, http_get, launch_chromium, login, running_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

USER, PASSWORD = "reader", "open-sesame-42"
QWEN_QUESTION = "Which Qwen3 variation is described as coding-proficient?"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("serve-auth")
    with running_server(workdir, generator="extractive", auth=f"{USER}:{PASSWORD}") as running:
        yield running


@pytest.fixture
def page(browser, protected):
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.goto(protected.url)
    page.wait_for_selector("input[type=password]")
    yield page
    context.close()


@pytest.mark.timeout(90)
def test_wrong_credentials_are_refused(page, protected):
    login(page, USER, "not-the-password")

    sync_api.expect(page.get_by_text("Incorrect Credentials", exact=False)).to_be_visible(timeout=15_000)
    assert page.locator("#question textarea").count() == 0
    assert page.locator("#chat").count() == 0
    assert page.locator("input[type=password]").is_visible()
    # The browser got no session either: the page's own config request is still refused.
    assert page.request.get(protected.url + "config").status == 401


@pytest.mark.timeout(150)
def test_right_credentials_log_in_and_get_an_answer(page):
    login(page, USER, PASSWORD)

    page.wait_for_selector("#question textarea", timeout=30_000)
    assert page.locator("input[type=password]").count() == 0
    message = ask(page, QWEN_QUESTION)
    assert "Qwen3-Coder" in message.inner_text()
    assert message.locator(".rag-error").count() == 0


@pytest.mark.timeout(60)
def test_api_without_login_is_refused(protected):
    for path in ("config", "gradio_api/info", "gradio_api/openapi.json"):
        status, body = http_get(protected.url + path)
        assert status == 401, (path, status, body[:200])
        assert "Not authenticated" in body

    # The queue the chat's answers go through: joining it without a session is refused too.
    join = urllib.request.Request(
        protected.url + "gradio_api/queue/join",
        data=json.dumps({"data": [QWEN_QUESTION, [], None, "extractive", 5], "fn_index": 0,
                         "session_hash": "anonymous", "event_data": None, "trigger_id": None}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(join, timeout=10)
    assert refused.value.code == 401

    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(protected.url, verbose=False)
    # gradio_client raises ValueError on the 400 that Gradio answers to a wrong password.
    with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
        Client(protected.url, auth=(USER, "not-the-password"), verbose=False)
    # The refusals are about the credentials: with the right ones, the same client connects.
    client = Client(protected.url, auth=(USER, PASSWORD), verbose=False)
    assert client.config["components"]
    # ... and the server's API answers: one JSON answer with verified citations.
    answer = client.predict("Which Qwen3 variation is described as coding-proficient?", api_name="/ask")
    assert "Qwen3-Coder" in answer["text"] and answer["refused"] is False
    assert answer["citations"] and all(c["verified"] for c in answer["citations"])


@pytest.mark.timeout(150)
def test_planted_api_key_never_reaches_the_page_or_the_log(browser, tmp_path):
    key = f"sk-planted-{secrets.token_hex(16)}"
    with running_server(tmp_path, generator="extractive", openai_api_key=key) as running:
        status, served = http_get(running.url)
        assert status == 200
        assert key not in served
        _, config = http_get(running.url + "config")
        assert key not in config

        context = browser.new_context(viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        bodies: list[str] = []

        def keep_body(response) -> None:
            try:
                bodies.append(response.text())
            except Exception:  # streamed or redirected responses have no body to read back
                pass

        page.on("response", keep_body)
        page.goto(running.url)
        page.wait_for_selector("#question textarea")
        message = ask(page, QWEN_QUESTION)
        assert "Qwen3-Coder" in message.inner_text()
        page.locator("#answer-citations [data-cite]").first.click()
        sync_api.expect(page.locator("#passage-viewer .rag-hit").first).to_be_visible(timeout=20_000)

        assert key not in page.content()
        assert key not in page.locator("body").inner_text()
        assert bodies and not [b[:120] for b in bodies if key in b]
        context.close()
        log = running.log()
    assert key not in log
    assert key[len("sk-planted-"):] not in log
