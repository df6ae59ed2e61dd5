"""What the chat shows while an answer is on its way, in order: the question as sent (by the page's
own script, before the server has it), what the server is doing before the model is asked, then
the words as the model writes them. Driven through the handlers with a scripted model (no browser,
no clock: the order of events is asserted, never how long they took)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from fakes import ScriptedGenerator, register_scripted, unregister, write_corpus  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from ui import handlers as ui_handlers  # noqa: E402
from ui.handlers import RESPOND_OUTPUTS, STOP_OUTPUTS, ChatHandlers  # noqa: E402
from ui.layout import build_app  # noqa: E402
from ui.rendering import SENDING, is_pending, render_error, render_streaming  # noqa: E402
from ui.state import Activity, message_text  # noqa: E402

HEKLA = "When did Hekla erupt?"
KATLA = "When did Katla erupt?"


def frame(values: tuple) -> dict:
    return dict(zip(RESPOND_OUTPUTS, values))


def shown(values: tuple) -> str:
    """The newest chat message of one `respond` update."""
    return message_text(frame(values)["chat"][-1])


def sent_by_the_page(question: str) -> list[dict]:
    """The question and its note as the page's script adds them (Gradio's message format:
    content as a list of parts)."""
    return [{"role": role, "content": [{"type": "text", "text": text}], "metadata": None, "options": None}
            for role, text in (("user", question), ("assistant", render_streaming("", SENDING)))]


class GatedGenerator(ScriptedGenerator):
    """Writes its first piece, then waits until `release` is set before writing the rest: what the
    page shows meanwhile is what the user sees while the model is still writing."""

    def __init__(self) -> None:
        super().__init__(default="Hekla erupted in 1947 [1].")
        self.release = threading.Event()
        self.finished = threading.Event()

    def stream(self, request):
        for n, piece in enumerate(super().stream(request)):
            if n == 1:
                self.release.wait(30)  # a bound, so a page that never shows the first piece fails, not hangs
            yield piece
        self.finished.set()


@pytest.fixture
def rag(make_settings, in_tmp: Path) -> Rag:
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0))
    rag.index()
    return rag


@pytest.fixture
def scripted():
    generator = register_scripted(ScriptedGenerator())
    yield generator
    unregister("scripted")


@pytest.fixture
def gated():
    generator = register_scripted(GatedGenerator(), "gated")
    yield generator
    generator.release.set()
    unregister("gated")


def test_the_page_shows_a_sent_question_itself_and_the_answer_follows_it(rag):
    config = build_app(rag).get_config_file()
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    events = config["dependencies"]
    sent = next(d for d in events if ("question" in [ids.get(t[0]) for t in d["targets"]]
                                      and "submit" in [t[1] for t in d["targets"]]))
    assert sent["backend_fn"] is False, "shown in the browser, without waiting for the server"
    assert {ids[t[0]] for t in sent["targets"]} == {"question", "send"}
    assert json.dumps(render_streaming("", SENDING)) in sent["js"]
    assert [ids[o] for o in sent["outputs"]] == ["question", "chat"]

    answering = next(d for d in events if d.get("trigger_after") == sent["id"])
    assert answering["backend_fn"] is True
    assert [ids.get(o) for o in answering["outputs"]][:2] == ["question", "chat"]
    stops = [d for d in events if "stop" in [ids.get(t[0]) for t in d["targets"]]]
    assert any(answering["id"] in d["cancels"] for d in stops), "the stop button stops the answer"


def test_a_question_shown_as_sent_is_replaced_by_its_answer_not_repeated(rag, scripted, monkeypatch):
    monkeypatch.setattr(ui_handlers, "STREAM_FRAME_SECONDS", 0.0)
    handlers = ChatHandlers(rag)
    earlier = [frame(v) for v in handlers.respond(HEKLA, [], [], "scripted", 3)][-1]
    chat = earlier["chat"] + sent_by_the_page(KATLA)
    assert is_pending(chat)

    out = [frame(v) for v in handlers.respond(KATLA, chat, earlier["turns"], "scripted", 3)]
    for update in out:
        if isinstance(update["chat"], list):
            assert update["chat"][:2] == earlier["chat"] and len(update["chat"]) == 4
            assert SENDING not in message_text(update["chat"][-1])
    assert message_text(out[-1]["chat"][2]) == KATLA
    assert "rag-final" in message_text(out[-1]["chat"][3])
    assert len(out[-1]["turns"]) == 2


def test_a_rejected_question_takes_its_sent_note_away(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0, max_question_chars=10))
    rag.index()
    with pytest.warns(UserWarning, match="the limit is 10"):
        out = [frame(v) for v in ChatHandlers(rag).respond(HEKLA, sent_by_the_page(HEKLA), [], "extractive", 3)]
    assert out[-1]["chat"] == [] and out[-1]["question"] == HEKLA


def test_only_a_question_no_answer_has_started_on_counts_as_pending():
    def chat(*assistant: str) -> list[dict]:
        return [{"role": "user", "content": HEKLA}] + [{"role": "assistant", "content": a} for a in assistant]

    assert is_pending(sent_by_the_page(HEKLA))
    assert is_pending(chat(render_streaming("")))
    assert not is_pending(chat(render_streaming("Hekla erupted")))  # words have arrived
    assert not is_pending(chat(render_error("no model")))
    assert not is_pending(chat())
    assert not is_pending([{"role": "assistant", "content": render_streaming("")}])


def test_what_is_read_shows_before_the_model_is_asked(rag, scripted):
    scripted.enqueue("Hekla erupted in 1947 [1].")
    running = ChatHandlers(rag).respond(HEKLA, [], [], "scripted", 3)
    searching = next(running)
    assert "Searching the documents" in shown(searching) and scripted.calls == 0
    reading = next(running)
    assert "Reading 3 passages" in shown(reading) and "rag-thinking" in shown(reading)
    assert scripted.calls == 0, "the note comes before the model starts reading"
    rest = list(running)
    assert scripted.calls == 1 and "rag-final" in shown(rest[-1])


def test_the_first_note_says_the_models_are_still_loading(rag, scripted):
    activity = Activity()
    activity.warming = "Warming up the answering model: the first answer may take longer."
    first = next(ChatHandlers(rag, activity=activity).respond(HEKLA, [], [], "scripted", 3))
    assert "still loading" in shown(first) and "Searching the documents" in shown(first)
    activity.warming = None
    first = next(ChatHandlers(rag, activity=activity).respond(HEKLA, [], [], "scripted", 3))
    assert "Searching the documents" in shown(first) and "still loading" not in shown(first)


def test_words_show_while_the_model_is_still_writing(rag, gated, monkeypatch):
    monkeypatch.setattr(ui_handlers, "STREAM_FRAME_SECONDS", 0.0)
    running = ChatHandlers(rag).respond(HEKLA, [], [], "gated", 3)
    first_words = next(v for v in running if "rag-cursor" in shown(v))
    assert not gated.finished.is_set(), "shown before the model finished"
    assert first_words and shown(first_words).startswith("Hekla ") and "1947" not in shown(first_words)
    gated.release.set()
    rest = [shown(v) for v in running]
    words = [s for s in rest if "rag-cursor" in s]
    assert len(words) >= 3 and "1947" in words[-1], "each piece shown as it arrives"
    assert "rag-final" in rest[-1]


def test_stopping_before_the_server_started_says_so(rag):
    shown_stop = dict(zip(STOP_OUTPUTS, ChatHandlers(rag).stop(sent_by_the_page(HEKLA), [])))
    assert "Stopped before an answer arrived." in message_text(shown_stop["chat"][-1])
    assert shown_stop["turns"] == []


def test_a_question_waiting_for_its_turn_shows_its_place_then_the_answer(rag, scripted, monkeypatch):
    from rag.types import Note

    monkeypatch.setattr(ui_handlers, "STREAM_FRAME_SECONDS", 0.0)

    class Queued(ScriptedGenerator):
        def stream(self, request):
            yield Note("Waiting for the model: 2 questions ahead of yours")
            yield Note("Waiting for the model: yours is next")
            yield from super().stream(request)

    register_scripted(Queued(default="Katla erupted in 1918 [1]."), "queued")
    try:
        out = [shown(v) for v in ChatHandlers(rag).respond(KATLA, sent_by_the_page(KATLA), [], "queued", 3)]
    finally:
        unregister("queued")
    waits = [text for text in out if "Waiting for the model" in text]
    assert "2 questions ahead of yours" in waits[0] and "yours is next" in waits[-1]
    later = out[out.index(waits[-1]) + 1:]
    assert later and all("Waiting" not in text for text in later)
    assert "rag-final" in out[-1] and "1918" in out[-1]
