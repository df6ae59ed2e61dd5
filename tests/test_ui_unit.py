"""The chat's handlers, page and serving, called directly over a hashing-embedder index (no browser).

The HTML itself is tested as pure functions in test_ui_rendering.py.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from fastapi import FastAPI  # noqa: E402

from fakes import CORPUS, ScriptedGenerator, register_scripted, unregister, write_corpus  # noqa: E402
from rag import generation  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.types import Citation  # noqa: E402
from ui import handlers as ui_handlers  # noqa: E402
from ui import serving as ui_serving  # noqa: E402
from ui.handlers import RESPOND_OUTPUTS, STOP_OUTPUTS, ChatHandlers  # noqa: E402
from ui.layout import build_app  # noqa: E402
from ui.serving import exposure_warning, launch_options, serve  # noqa: E402
from ui.state import Activity, Turn, message_text  # noqa: E402

UNSAFE = (
    'Tags like <script>alert("pwn")</script> & <b>bold</b> appear in the teapot manual.\n'
    "Teapots brew at 451 degrees according to the teapot manual.\n"
)
HEKLA = "When did Hekla erupt?"


def is_skip(value: object) -> bool:
    return isinstance(value, dict) and value == {"__type__": "update"}


def frames(handlers: ChatHandlers, question: str, chat=(), turns=(), generator="extractive", top_k=3):
    """Every update `respond` yields, as dicts keyed by output name."""
    return [
        dict(zip(RESPOND_OUTPUTS, out))
        for out in handlers.respond(question, list(chat), list(turns), generator, top_k)
    ]


def text_of(message: dict) -> str:
    return message_text(message)


@pytest.fixture
def rag(make_settings, in_tmp: Path) -> Rag:
    write_corpus(in_tmp / "seeds", CORPUS | {"unsafe.txt": UNSAFE})
    # Every question reaches the generator: the hashing embedder's similarities are not meaningful.
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0))
    rag.index()
    return rag


@pytest.fixture
def handlers(rag: Rag) -> ChatHandlers:
    return ChatHandlers(rag)


@pytest.fixture
def scripted():
    generator = register_scripted(ScriptedGenerator())
    yield generator
    unregister("scripted")


def test_build_app_has_the_stable_element_ids(rag):
    demo = build_app(rag)
    ids = {c.get("props", {}).get("elem_id") for c in demo.get_config_file()["components"]}
    assert {
        "question", "send", "stop", "clear", "chat", "answer-citations", "passage-viewer",
        "rebuild", "rebuild-summary", "status", "generator", "generator-in-use", "top-k",
    } <= ids
    radio = next(c for c in demo.get_config_file()["components"] if c.get("props", {}).get("elem_id") == "generator")
    choices = [choice[1] for choice in radio["props"]["choices"]]
    assert choices[0] == "auto" and "extractive" in choices


def test_answer_streams_then_shows_markers_matching_its_sources(handlers, scripted, monkeypatch):
    monkeypatch.setattr(ui_handlers, "STREAM_FRAME_SECONDS", 0.0)
    scripted.enqueue("Hekla erupted in 1947 [1]. Katla last erupted in 1918 [2].")
    out = frames(handlers, HEKLA, generator="scripted")

    first, last = out[0], out[-1]
    assert first["question"] == ""
    assert [m["role"] for m in first["chat"]] == ["user", "assistant"]
    assert "rag-thinking" in text_of(first["chat"][-1])
    assert first["send"]["interactive"] is False and first["stop"]["interactive"] is True

    assert "Reading 3 passages" in text_of(out[1]["chat"][-1]), "before a word: what is read"
    streamed = [text_of(f["chat"][-1]) for f in out[2:-1]]
    assert len(streamed) >= 5, "pieces are shown as they arrive"
    assert all("rag-cursor" in s for s in streamed)
    assert "Hekla" in streamed[0] and "1918" not in streamed[0] and "1918" in streamed[-1]

    final = text_of(last["chat"][-1])
    [turn] = last["turns"]
    markers = sorted(c.marker for c in turn.citations)
    # Passage 2 is another file; "[2]" after the Katla sentence is re-pointed to passage 1,
    # volcanoes.txt, which says it (rag.citations.correct_markers).
    passages = scripted.requests[-1].passages
    assert passages[0].chunk.source == "volcanoes.txt" and "Katla" in passages[0].chunk.text
    assert "Katla" not in passages[1].chunk.text
    assert markers == [1]
    for c in turn.citations:
        assert f'<span class="rag-marker">[{c.marker}]</span>' in final
        assert f"<b>[{c.marker}]</b> {c.source}" in final
        assert f'data-cite="0:{c.marker}"' in last["citations"]
    assert "rag-cursor" not in final and "rag-final" in final
    assert last["send"]["interactive"] is True and last["stop"]["interactive"] is False
    assert "scripted" in last["generator_note"]


def test_clicked_source_shows_the_cited_lines_in_context(handlers, scripted):
    scripted.enqueue("Katla lies beneath the Myrdalsjokull glacier [1][2][3][4][5].")
    last = frames(handlers, "Which glacier does Katla lie beneath?", generator="scripted", top_k=10)[-1]
    [turn] = last["turns"]
    citation = next(c for c in turn.citations if c.source == "volcanoes.txt")

    viewer = handlers.open_citation(f"0:{citation.marker}", last["turns"])

    assert 'class="rag-viewer-file">volcanoes.txt<' in viewer
    assert viewer.count('class="rag-line rag-hit"') == citation.end_line - citation.start_line + 1
    assert f'<span class="rag-ln">{citation.start_line}</span><mark' in viewer
    assert '<strong class="rag-quote">' in viewer and "Myrdalsjokull" in viewer
    # Lines around the citation are shown for context, not highlighted.
    assert '<div class="rag-line"><span class="rag-ln">3</span><span class="rag-lt">Hekla is the most' in viewer


def test_document_text_is_escaped_everywhere(handlers, rag):
    citation = Citation(marker=1, source="unsafe.txt", start_line=1, end_line=1, quote=UNSAFE.split("\n")[0], score=1.0)
    viewer = handlers.passage(citation)
    assert "<script" not in viewer and "<b>bold" not in viewer
    assert "&lt;script&gt;alert(&quot;pwn&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in viewer

    first = frames(handlers, '<img src=x onerror="alert(1)"> teapot tags?')[0]
    assert "<img" not in text_of(first["chat"][0]) and "&lt;img" in text_of(first["chat"][0])


def test_sources_outside_the_index_are_never_opened(handlers, rag, in_tmp, monkeypatch):
    (in_tmp / "secret.txt").write_text("password=hunter2\n", encoding="utf-8")
    turns = frames(handlers, HEKLA)[-1]["turns"]

    for key in ("../secret.txt", "0:99", "7:1", "0:1; rm", None, 5, {"cite": "0:1"}):
        assert "not available" in handlers.open_citation(key, turns)

    def must_not_read(source):  # pragma: no cover - failing here is the point
        raise AssertionError(f"read {source}")

    monkeypatch.setattr(rag, "document_lines", must_not_read)
    for source in ("../secret.txt", str(in_tmp / "secret.txt"), "volcanoes.txt/../../secret.txt"):
        forged = Turn(question="q", text="t", citations=(
            Citation(marker=1, source=source, start_line=1, end_line=1, quote="password", score=1.0),
        ))
        viewer = handlers.open_citation("0:1", [forged])
        assert "no longer in the index" in viewer and "hunter2" not in viewer


def test_refusal_is_shown_as_a_refusal(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="extractive", relevance_floor=1.0))  # nothing is relevant
    rag.index()
    last = frames(ChatHandlers(rag), "Who won the 2022 FIFA World Cup?")[-1]

    message = text_of(last["chat"][-1])
    assert 'class="rag-refusal rag-final"' in message and "Not in the documents" in message
    assert "rag-answer" not in message and "rag-sources" not in message
    assert last["turns"][0].refused
    assert "No sources" in last["citations"]


def test_follow_up_shows_the_rewritten_question(handlers, scripted):
    first = frames(handlers, "When did Hekla last erupt?", generator="scripted")[-1]
    second = frames(
        handlers, "What about its neighbour Katla?", first["chat"], first["turns"], generator="scripted"
    )[-1]

    message = text_of(second["chat"][-1])
    assert "Searched for:" in message
    assert "(about: Hekla last erupt)" in message
    assert "(about: Hekla last erupt)" in scripted.requests[-1].question
    assert [t.question for t in second["turns"]] == ["When did Hekla last erupt?", "What about its neighbour Katla?"]
    assert second["turns"][1].msg == 3

    # Clicking the first answer brings its sources back.
    citations, viewer = handlers.select_message(1, second["turns"])
    assert "When did Hekla last erupt?" in citations and 'data-cite="0:' in citations


def test_empty_question_warns_and_changes_nothing(handlers):
    with pytest.warns(UserWarning, match="empty"):
        out = frames(handlers, "   \n ")
    assert len(out) == 1 and all(is_skip(v) for v in out[0].values())


def test_errors_become_messages_and_the_chat_keeps_working(make_settings, in_tmp, monkeypatch):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0, llm_model_path=in_tmp / "missing.gguf"))
    rag.index()
    handlers = ChatHandlers(rag)

    with pytest.warns(UserWarning):
        failed = frames(handlers, HEKLA, generator="llamacpp")[-1]
    message = text_of(failed["chat"][-1])
    assert 'class="rag-error rag-final"' in message and "Could not answer" in message
    assert is_skip(failed["turns"]) and failed["send"]["interactive"] is True

    with pytest.warns(UserWarning, match="unknown generator"):
        frames(handlers, HEKLA, generator="nonsense")

    ok = frames(handlers, HEKLA, failed["chat"], [], generator="extractive")[-1]
    assert len(ok["chat"]) == 4 and "rag-answer" in text_of(ok["chat"][-1])

    monkeypatch.setattr(rag, "ask_stream", lambda *a, **k: 1 / 0)
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        broken = frames(handlers, HEKLA)[-1]
    assert "unexpected ZeroDivisionError" in text_of(broken["chat"][-1])


def test_endpoint_down_falls_back_with_a_visible_note(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(
        generator="openai", relevance_floor=-1.0, openai_base_url="http://127.0.0.1:9/v1",
        openai_retries=0, openai_timeout=3,
    ))
    rag.index()
    last = frames(ChatHandlers(rag), HEKLA, generator="openai")[-1]
    message = text_of(last["chat"][-1])
    assert "rag-answer" in message
    assert 'class="rag-note"' in message and "extractive" in message.split('class="rag-note"')[1]
    assert "fallback from openai" in last["generator_note"]


def test_stop_keeps_what_arrived_and_re_enables_sending(handlers, scripted, monkeypatch):
    monkeypatch.setattr(ui_handlers, "STREAM_FRAME_SECONDS", 0.0)
    scripted.enqueue("Hekla erupted in 1947 and again in 2000 [1] and it will erupt again.")
    running = handlers.respond(HEKLA, [], [], "scripted", 3)
    next(running)
    reading = dict(zip(RESPOND_OUTPUTS, next(running)))  # what the model reads, before a word
    assert "Reading" in text_of(reading["chat"][-1]) and "rag-cursor" not in text_of(reading["chat"][-1])
    partial = dict(zip(RESPOND_OUTPUTS, next(running)))
    next(running)
    running.close()  # what Gradio's cancel amounts to for the handler

    shown = dict(zip(STOP_OUTPUTS, handlers.stop(partial["chat"], [])))
    message = text_of(shown["chat"][-1])
    assert message.startswith("Hekla") and "Stopped." in message and "rag-cursor" not in message
    assert shown["turns"][0].question == HEKLA and shown["turns"][0].text.startswith("Hekla")
    assert shown["send"]["interactive"] is True and shown["stop"]["interactive"] is False

    finished = frames(handlers, HEKLA)[-1]["chat"]
    assert handlers.stop(finished, [])[0] == finished  # nothing to stop: the chat is left alone


def test_rebuild_runs_the_incremental_build_and_reports(handlers, in_tmp):
    (in_tmp / "seeds" / "new-notes.txt").write_text("Geysir gave its name to all geysers.\n", encoding="utf-8")
    summary, status = handlers.rebuild()
    assert "Index updated" in summary and "1 added" in summary and "new-notes.txt" in summary
    assert '<b data-stat="documents">5</b>' in status and "new-notes.txt" in status

    summary, _ = handlers.rebuild()
    assert "already up to date" in summary and "0 added" in summary


def test_status_without_an_index_says_what_to_do(make_settings, in_tmp):
    html = ChatHandlers(Rag(make_settings())).status_html()
    assert "no index" in html.lower() and "rag index" in html


def test_generator_note_names_what_answered(handlers, scripted):
    assert "picked on the first question" in handlers.generator_note("auto")
    handlers.activity.resolve("auto", "extractive")  # what an answer or the warm-up records
    assert ">extractive <small>(for auto)" in handlers.generator_note("auto")
    frames(handlers, HEKLA, generator="scripted")
    assert '<b class="rag-generator">scripted</b>' in handlers.generator_note("scripted")


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
     ("0.0.0.0", None, True), ("192.168.1.20", None, True), ("0.0.0.0", "me:secret", False)],
)
def test_exposure_warning_only_for_open_non_loopback_addresses(make_settings, host, auth, warned):
    warning = exposure_warning(make_settings(host=host, auth=auth))
    assert bool(warning) is warned
    if warned:
        assert "RAG_AUTH" in warning


def test_launch_options_bind_and_protect(make_settings):
    options = launch_options(make_settings(port=8123, auth="me:secret"))
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 8123
    assert options["auth"] == ("me", "secret") and options["share"] is False


def test_serve_warns_launches_and_stops_the_watcher(make_settings, in_tmp, monkeypatch, capsys, caplog):
    write_corpus(in_tmp / "seeds")
    launched: dict = {}

    def fake_launch(self, **kwargs):
        launched.update(kwargs)
        launched["watcher"] = next((t for t in threading.enumerate() if t.name == "rag-watch"), None)
        self.app = launched["app"] = FastAPI()  # what Gradio serves the page from
        return None, f"http://{kwargs['server_name']}:{kwargs['server_port']}/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    monkeypatch.setattr(ui_serving, "extra_routes", lambda app, rag: launched.update(routes_on=(app, rag)))
    with caplog.at_level(logging.WARNING, logger="ui.serving"):
        serve(make_settings(host="0.0.0.0", port=8124, watch=True, generator="extractive"))

    out = capsys.readouterr().out
    assert "warning:" in out and "RAG_AUTH" in out and "http://0.0.0.0:8124/" in out
    assert any("RAG_AUTH" in r.getMessage() for r in caplog.records)
    assert launched["server_name"] == "0.0.0.0" and launched["auth"] is None
    assert launched["prevent_thread_lock"] is True
    app, rag = launched["routes_on"]
    assert app is launched["app"] and rag.settings.port == 8124, "extra routes join the served app"
    watcher = launched["watcher"]
    assert watcher is not None and watcher.daemon
    watcher.join(timeout=10)
    assert not watcher.is_alive(), "the watcher stops when the server does"


def test_new_chat_forgets_the_conversation(handlers):
    chat, turns, citations, viewer, question, send, stop = handlers.clear()
    assert chat == [] and turns == [] and question == ""
    assert "appear here" in citations
    assert send["interactive"] is True and stop["interactive"] is False


def test_the_ask_api_returns_the_answer_as_json(rag, handlers, scripted):
    demo = build_app(rag)
    api = [d for d in demo.get_config_file()["dependencies"] if d.get("api_name") == "ask"]
    assert len(api) == 1 and api[0].get("api_visibility", "public") == "public"
    # Only the ask endpoint is public: the page's own events stay out of the API.
    public = [d["api_name"] for d in demo.get_config_file()["dependencies"]
              if d.get("api_visibility", "public") == "public"]
    assert public == ["ask"]

    scripted.enqueue("Hekla erupted in 1947 [1].")
    data = handlers.ask_api("When did Hekla erupt?", generator="scripted", top_k=2)
    assert data["text"] == "Hekla erupted in 1947 [1]." and data["generator"] == "scripted"
    assert data["refused"] is False and len(data["passages"]) <= 2
    [cite] = data["citations"]
    assert cite["marker"] == 1 and cite["source"] and cite["verified"] is True
    json.dumps(data)  # plain JSON, as the client receives it

    with pytest.raises(gr.Error, match="empty"):
        handlers.ask_api("   ")


def test_a_question_the_library_rejects_leaves_the_chat_as_it_was(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0, max_question_chars=40))
    rag.index()
    handlers = ChatHandlers(rag)
    earlier = frames(handlers, HEKLA)[-1]
    too_long = "When did Hekla erupt, and how often has it erupted since then?"

    with pytest.warns(UserWarning, match="characters; the limit is 40"):
        out = frames(handlers, too_long, earlier["chat"], earlier["turns"])
    last = out[-1]
    assert last["chat"] == earlier["chat"] and last["question"] == too_long
    assert is_skip(last["turns"]) and last["send"]["interactive"] is True and last["stop"]["interactive"] is False


def test_warm_up_readies_the_backend_without_answering(make_settings, in_tmp, scripted):
    created = []
    generation.register("scripted", lambda settings, embedder: created.append(1) or scripted)
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="scripted", relevance_floor=-1.0))
    rag.index()

    activity = Activity()
    ui_serving._warm_up(rag, activity, threading.Event())
    assert created == [1] and scripted.requests == []
    assert activity.resolved("scripted") == "scripted" and activity.warming is None

    frames(ChatHandlers(rag), HEKLA, generator="scripted")
    assert created == [1] and len(scripted.requests) == 1, "the first question reuses what was loaded"


def test_warm_up_without_an_index_builds_nothing(make_settings, in_tmp, scripted):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="scripted"))
    ui_serving._warm_up(rag, Activity(), threading.Event())
    assert not (in_tmp / "index").exists() or not any((in_tmp / "index").iterdir())
    assert scripted.requests == []


def test_the_page_answers_while_the_model_warms_up_and_says_so(make_settings, in_tmp, scripted):
    """Warm-up runs beside the page: status and answers are served meanwhile."""
    import threading

    release, started = threading.Event(), threading.Event()

    def warm(system: str) -> None:  # a local model reading its system prompt, slowly
        started.set()
        release.wait(30)

    scripted.warm = warm
    generation.register("scripted", lambda settings, embedder: scripted)
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="scripted", relevance_floor=-1.0))
    rag.index()
    activity = Activity()
    handlers = ChatHandlers(rag, activity=activity)
    worker = threading.Thread(target=ui_serving._warm_up, args=(rag, activity, threading.Event()), daemon=True)
    worker.start()
    try:
        assert started.wait(10)
        assert "Warming up the answering model" in handlers.status_html()
        out = frames(handlers, HEKLA, generator="scripted")
        assert out[-1]["turns"], "a question is answered while the warm-up runs"
    finally:
        release.set()
        worker.join(10)
    assert "Warming up" not in handlers.status_html()
