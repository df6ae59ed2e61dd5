"""The OpenAI-compatible endpoint: routes over a scripted Rag in process, then the official `openai`
client against a real `rag serve` (extractive answers, the packaged embedding model, RAG_AUTH set)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rag.openai_api import ChatMessage, conversation, mount_openai_api
from rag.pipeline import Rag
from rag.prompting import REFUSAL

from fakes import CORPUS, HASHING_FLOOR, line_of, scripted, write_corpus  # noqa: F401

KATLA = "When did Katla last erupt?"
KATLA_LINE = line_of(CORPUS["volcanoes.txt"], "Katla")


def _chat(question: str, **extra) -> dict:
    return {"model": "rag", "messages": [{"role": "user", "content": question}], **extra}


def _events(response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: ")]


@pytest.fixture
def make_client(make_settings, in_tmp):
    """A TestClient over an app serving the routes for a Rag over the small corpus."""

    def make(**overrides) -> TestClient:
        if overrides.pop("corpus", True):
            write_corpus(in_tmp / "seeds")
        settings = make_settings(**{"chunk_tokens": 24, "chunk_overlap": 0, "generator": "scripted",
                                    "relevance_floor": HASHING_FLOOR, **overrides})
        app = FastAPI()

        @app.get("/{path:path}")  # like Gradio's own catch-all, registered first
        def catch_all(path: str) -> dict:
            return {"caught": path}

        rag = Rag(settings)
        if (in_tmp / "seeds").is_dir():
            rag.index()
        mount_openai_api(app, rag)
        return TestClient(app)

    return make


# -- in process: shapes, status codes, conversation --------------------------------------------
def test_completion_carries_markers_citations_and_refused(make_client, scripted):
    scripted.enqueue("Katla last erupted in 1918 [1].")
    response = make_client().post("/v1/chat/completions", json=_chat(KATLA))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "rag"
    [choice] = body["choices"]
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "Katla last erupted in 1918 [1]."
    assert message["refused"] is False
    assert message["citations"] == [{
        "marker": 1, "file": "volcanoes.txt", "start_line": KATLA_LINE, "end_line": KATLA_LINE, "page": None,
        "quote": "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918.", "verified": True,
    }]


def test_stream_sends_pieces_then_the_checked_answer_then_done(make_client, scripted):
    scripted.enqueue("Katla last erupted in 1918 [1].")
    response = make_client().post("/v1/chat/completions", json=_chat(KATLA, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert len([p for p in pieces if p]) > 3  # word by word, not one block
    assert "".join(pieces) == "Katla last erupted in 1918 [1]."
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    final = chunks[-1]["choices"][0]
    assert final["finish_reason"] == "stop"
    assert final["delta"]["text"] == "Katla last erupted in 1918 [1]."
    assert final["delta"]["refused"] is False
    assert [(c["marker"], c["file"], c["start_line"]) for c in final["delta"]["citations"]] == [
        (1, "volcanoes.txt", KATLA_LINE)
    ]


def test_off_topic_question_is_refused_without_citations(make_client, scripted):
    response = make_client().post("/v1/chat/completions", json=_chat("Quantum chromodynamics gluon confinement?"))
    message = response.json()["choices"][0]["message"]
    assert (message["content"], message["refused"], message["citations"]) == (REFUSAL, True, [])
    assert scripted.calls == 0


def test_earlier_pairs_are_the_history_of_a_follow_up(make_client, scripted):
    messages = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Which cities stand on the Danube?"},
        {"role": "assistant", "content": "Vienna and Budapest [1]."},
        {"role": "user", "content": [{"type": "text", "text": "And its"}, {"type": "text", "text": " cities?"}]},
    ]
    response = make_client().post("/v1/chat/completions", json={"model": "rag-scripted", "messages": messages})
    assert response.status_code == 200, response.text
    [request] = scripted.requests
    # The follow-up was rewritten with the previous question's subject before retrieval.
    assert request.question.startswith("And its cities?") and "Danube" in request.question
    assert all("pirate" not in m.content for m in request.messages)


def test_conversation_pairs_user_and_assistant_turns():
    messages = [ChatMessage(role=r, content=c) for r, c in [
        ("system", "rules"), ("user", "q1"), ("assistant", "a1"), ("user", "lost"), ("user", "q2"),
        ("assistant", "a2"), ("tool", "x"), ("user", "q3"), ("assistant", "prefill"),
    ]]
    assert conversation(messages) == ("q3", [("q1", "a1"), ("q2", "a2")])


def test_models_are_the_usable_generators_and_beat_the_catch_all(make_client, scripted):
    client = make_client()
    response = client.get("/v1/models")
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert ids[0] == "rag" and {"rag-extractive", "rag-scripted"} <= set(ids)
    assert "rag-auto" not in ids
    assert client.get("/v1/models/rag-extractive").json()["id"] == "rag-extractive"
    assert client.get("/elsewhere").json() == {"caught": "elsewhere"}


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        (_chat("   "), 400, "invalid_question", "empty"),
        (_chat("x" * 5000), 400, "invalid_question", "RAG_MAX_QUESTION_CHARS"),
        ({"model": "rag", "messages": []}, 400, "invalid_request", "messages"),
        ({"model": "rag", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "missing_question", "user"),
        ({"model": "rag", "messages": "hello"}, 400, "invalid_request", "messages"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": KATLA}]}, 404, "model_not_found", "rag-extractive"),
    ],
)
def test_bad_requests_get_openai_errors(make_client, scripted, body, status, code, says):
    for stream in (False, True):
        response = make_client().post("/v1/chat/completions", json={**body, "stream": stream})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and says in error["message"]
        assert error["type"] == "invalid_request_error"
    assert scripted.calls == 0


def test_a_body_that_is_not_json_is_a_400(make_client):
    response = make_client().post("/v1/chat/completions", content=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "must be JSON" in response.json()["error"]["message"]


def test_no_documents_to_index_is_a_503(make_client, scripted):
    response = make_client(corpus=False).post("/v1/chat/completions", json=_chat(KATLA))
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "index_unavailable")
    assert "RAG_SEEDS_DIR" in error["message"] or "rag index" in error["message"]


def test_with_rag_auth_the_bearer_key_is_its_password(make_client, scripted):
    client = make_client(auth="reader:s3cret-pass")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-pass"},
                    {"Authorization": "Bearer reader:s3cret-pass"}):
        for method, path in (("post", "/v1/chat/completions"), ("get", "/v1/models")):
            response = client.request(method, path, json=_chat(KATLA), headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert "s3cret" not in response.text
    assert scripted.calls == 0
    good = {"Authorization": "Bearer s3cret-pass"}
    assert client.get("/v1/models", headers=good).status_code == 200
    assert client.post("/v1/chat/completions", json=_chat(KATLA), headers=good).status_code == 200
    assert scripted.calls == 1


# -- the official client against a real server --------------------------------------------------
USER, KEY = "reader", "api-key-7f3a"
QWEN_QUESTION = "Which Qwen3 variation is described as coding-proficient?"
CLAUDE_QUESTION = "What is Claude AI's focus according to the overview of American models?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ui_helpers import running_server

    workdir = tmp_path_factory.mktemp("serve-openai")
    with running_server(workdir, generator="extractive", auth=f"{USER}:{KEY}") as running:
        _wait_for_index(running)
        yield running


def _wait_for_index(server, timeout: float = 120.0) -> None:
    """Until the server's watcher has built the first index (the API answers 503 before)."""
    import time

    from rag.config import Settings
    from rag.errors import RagError
    from rag.pipeline import index_status

    settings = Settings(_env_file=None, seeds_dir=server.seeds_dir, index_dir=server.index_dir)
    deadline = time.monotonic() + timeout
    while True:
        try:
            index_status(settings)
            return
        except RagError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no index after {timeout:.0f}s:\n{server.log()}") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "v1", api_key=KEY, max_retries=0, timeout=120)


def _check_qwen_citations(citations: list[dict], text: str) -> None:
    assert citations, text
    assert any("Qwen3-Coder" in c["quote"] for c in citations)
    for c in citations:
        assert f"[{c['marker']}]" in text
        assert c["verified"] is True and c["quote"] and 1 <= c["start_line"] <= c["end_line"]


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_client_gets_an_answer_with_citations(client):
    completion = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": QWEN_QUESTION}])
    message = completion.choices[0].message
    assert "Qwen3-Coder" in message.content
    assert message.refused is False
    _check_qwen_citations(message.citations, message.content)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_client_streams_an_answer_with_citations_in_the_final_chunk(client):
    chunks = list(client.chat.completions.create(
        model="rag-extractive", messages=[{"role": "user", "content": QWEN_QUESTION}], stream=True,
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len([c for c in chunks if c.choices[0].delta.content]) > 3
    assert "Qwen3-Coder" in text
    final = chunks[-1].choices[0]
    assert final.finish_reason == "stop"
    assert final.delta.text == text.strip()
    assert final.delta.refused is False
    _check_qwen_citations(final.delta.citations, text)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_client_follow_up_uses_the_history(client):
    first = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": CLAUDE_QUESTION}])
    assert "Claude" in first.choices[0].message.content
    follow_up = "What about its safety?"
    alone = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": follow_up}])
    answer = client.chat.completions.create(model="rag", messages=[
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": CLAUDE_QUESTION},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": follow_up},
    ]).choices[0].message
    # "it" is Claude only through the conversation: alone, the question finds other passages
    # (answers are deterministic, so ignoring the history would give the same answer twice).
    assert answer.refused is False and "Claude" in answer.content and answer.citations
    assert answer.content != alone.choices[0].message.content


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_client_lists_the_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "rag" and "rag-extractive" in ids
    assert all(i == "rag" or i.startswith("rag-") for i in ids)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_wrong_key_is_refused_and_the_right_one_accepted(server, client):
    import openai

    wrong = openai.OpenAI(base_url=server.url + "v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="rag", messages=[{"role": "user", "content": QWEN_QUESTION}])
    assert [m.id for m in client.models.list()][0] == "rag"
    # The page itself still wants its login: the key opens the API only.
    from ui_helpers import http_get

    assert http_get(server.url + "config")[0] == 401


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_client_empty_question_is_a_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="rag", messages=[{"role": "user", "content": "  "}])
    assert bad.value.status_code == 400
    assert "empty" in bad.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QWEN_QUESTION}])


def test_a_stream_waiting_for_its_turn_says_its_place_in_comment_lines(make_client):
    import threading
    import time as clock

    from fakes import ScriptedGenerator, register_scripted, unregister

    generating, release = threading.Event(), threading.Event()

    class Held(ScriptedGenerator):
        def stream(self, request):
            generating.set()
            release.wait(30)
            yield "Katla last erupted in 1918 [1]."

    register_scripted(Held(), "held")
    try:
        client = make_client(generator="held", max_concurrent=1)
        responses: dict[str, object] = {}

        def post(name: str) -> None:
            responses[name] = client.post("/v1/chat/completions", json=_chat(KATLA, stream=True))

        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert generating.wait(30)
        second = threading.Thread(target=post, args=("second",))
        second.start()
        clock.sleep(1.5)  # the second waits meanwhile (told its place every 0.5 s)
        release.set()
        first.join(30)
        second.join(30)
    finally:
        unregister("held")
    waiting = [line for line in responses["second"].text.split("\n") if line.startswith(": ")]
    assert waiting and waiting[0] == ": Waiting for the model: yours is next"
    assert not any(line.startswith(": ") for line in responses["first"].text.split("\n"))
    assert _events(responses["second"])[-1] == "[DONE]"
