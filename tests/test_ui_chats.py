"""Saved conversations in the page's handlers (no browser): saving, opening, follow-ups, owners,
rename, delete, export, and a cited document that changed since the answer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

gr = pytest.importorskip("gradio")

from fakes import CORPUS, write_corpus  # noqa: E402
from rag.chats import FILE_NAME, ChatStore  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from ui.conversations import DELETE_OUTPUTS, OPEN_OUTPUTS, SavedConversations  # noqa: E402
from ui.conversations_view import CHANGED_NOTE, render_chat_list  # noqa: E402
from ui.handlers import RESPOND_OUTPUTS, ChatHandlers  # noqa: E402
from ui.layout import build_app  # noqa: E402
from ui.serving import launch_options  # noqa: E402
from ui.state import message_text  # noqa: E402

HEKLA = "When did Hekla erupt?"
ALICE, BOB = SimpleNamespace(username="alice"), SimpleNamespace(username="bob")


@pytest.fixture
def rag(make_settings, in_tmp: Path) -> Rag:
    write_corpus(in_tmp / "seeds", CORPUS)
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0))
    rag.index()
    return rag


@pytest.fixture
def handlers(rag: Rag, tmp_path: Path) -> ChatHandlers:
    return ChatHandlers(rag, saved=SavedConversations(rag, exports=tmp_path / "exports"))


def answer(handlers: ChatHandlers, question: str, chat=(), turns=(), conversation=None, request=None) -> dict:
    """The last update of `respond`, keyed by output name."""
    *_, last = handlers.respond(question, list(chat), list(turns), "extractive", 3, conversation, request)
    return dict(zip(RESPOND_OUTPUTS, last))


def opened(handlers: ChatHandlers, conversation: str, request=None) -> dict:
    return dict(zip(OPEN_OUTPUTS, handlers.saved.open(conversation, request)))


def test_each_answer_is_saved_in_the_open_conversation(handlers, rag):
    first = answer(handlers, HEKLA)
    assert first["conversation"], "the first answer starts a conversation"
    second = answer(handlers, "And Katla?", first["chat"], first["turns"], first["conversation"])
    assert second["conversation"] == first["conversation"]

    [listed] = ChatStore.for_settings(rag.settings).list("")
    assert listed.title == HEKLA and listed.id == first["conversation"]
    thread = ChatStore.for_settings(rag.settings).get(listed.id, "")
    assert [t.question for t in thread.turns] == [HEKLA, "And Katla?"]
    assert thread.turns[0].answer.citations == list(first["turns"][0].citations)
    assert f'data-chat="{listed.id}"' in second["chat_list"] and "active" in second["chat_list"]
    assert second["chat_title"] == HEKLA
    assert Path(second["chat_export"]).read_text(encoding="utf-8").count("## ") == 2


def test_a_reopened_conversation_shows_its_answers_sources_and_takes_follow_ups(handlers):
    first = answer(handlers, HEKLA)
    page = opened(handlers, first["conversation"])

    assert [m["role"] for m in page["chat"]] == ["user", "assistant"]
    assert message_text(page["chat"][1]) == message_text(first["chat"][1]), "shown as when it was asked"
    [turn] = page["turns"]
    assert turn.msg == 1 and turn.citations == first["turns"][0].citations
    citation = turn.citations[0]
    assert f'data-cite="0:{citation.marker}"' in page["citations"]
    assert 'class="rag-line rag-hit"' in handlers.open_citation(f"0:{citation.marker}", page["turns"])

    follow_up = answer(handlers, "What about Katla?", page["chat"], page["turns"], page["conversation"])
    assert "(about: Hekla erupt)" in message_text(follow_up["chat"][-1]), "the history came with it"
    assert follow_up["conversation"] == first["conversation"]
    assert len(opened(handlers, first["conversation"])["turns"]) == 2


def test_users_never_see_or_open_each_others_conversations(handlers):
    alices = answer(handlers, HEKLA, request=ALICE)["conversation"]

    assert alices not in handlers.saved.listing(None, BOB)
    assert alices in handlers.saved.listing(None, ALICE)
    with pytest.warns(UserWarning, match="no longer available"):
        refused = handlers.saved.open(alices, BOB)
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in refused), "nothing of hers shown"
    # Bob cannot append to it either: his answer starts a conversation of his own.
    bobs = answer(handlers, "And Katla?", conversation=alices, request=BOB)["conversation"]
    assert bobs != alices and bobs in handlers.saved.listing(None, BOB)
    assert alices not in handlers.saved.listing(None, BOB)
    assert len(opened(handlers, alices, ALICE)["turns"]) == 1


def test_rename_and_delete_with_confirmation(handlers, rag):
    conversation = answer(handlers, HEKLA)["conversation"]

    listing, title, export = handlers.saved.rename(conversation, "Icelandic volcanoes")
    assert title == "Icelandic volcanoes" and "Icelandic volcanoes" in listing
    assert Path(export).name == "Icelandic-volcanoes.md"

    confirm, prompt = handlers.saved.ask_delete(conversation, title)
    assert confirm["visible"] is True and "Icelandic volcanoes" in prompt
    assert handlers.saved.cancel_delete()[0]["visible"] is False

    out = dict(zip(OPEN_OUTPUTS + DELETE_OUTPUTS, handlers.saved.delete(conversation)))
    assert out["chat"] == [] and out["turns"] == [] and out["conversation"] is None
    assert "No saved conversations" in out["chat_list"] and out["delete_confirm"]["visible"] is False
    assert ChatStore.for_settings(rag.settings).list("") == []


def test_a_changed_document_is_flagged_instead_of_highlighted(handlers, rag, in_tmp):
    first = answer(handlers, HEKLA)
    cited = first["turns"][0].citations[0]
    assert cited.source == "volcanoes.txt"
    assert "changed since" not in first["citations"]

    (in_tmp / "seeds" / "volcanoes.txt").write_text("New first line.\n" + CORPUS["volcanoes.txt"], encoding="utf-8")
    rag.index()
    page = opened(handlers, first["conversation"])

    assert "changed since this answer" in page["citations"]
    viewer = handlers.open_citation(f"0:{cited.marker}", page["turns"])
    assert CHANGED_NOTE in viewer and "rag-hit" not in viewer
    # An unchanged document is still opened in context.
    (in_tmp / "seeds" / "volcanoes.txt").write_text(CORPUS["volcanoes.txt"], encoding="utf-8")
    rag.index()
    assert "rag-hit" in handlers.open_citation(f"0:{cited.marker}", page["turns"])


def test_an_answer_that_cannot_be_saved_is_still_shown(make_settings, in_tmp, tmp_path):
    write_corpus(in_tmp / "seeds", CORPUS)
    rag = Rag(make_settings(generator="extractive", relevance_floor=-1.0))
    rag.index()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    handlers = ChatHandlers(rag, saved=SavedConversations(rag, ChatStore(blocker / FILE_NAME), tmp_path / "e"))
    with pytest.warns(UserWarning, match="could not be saved"):
        last = answer(handlers, HEKLA)
    assert "rag-answer" in message_text(last["chat"][-1]) and len(last["turns"]) == 1
    assert last["conversation"] is None and "unavailable" in last["chat_list"]


def test_the_list_escapes_titles_and_marks_the_open_one():
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    rows = [SimpleNamespace(id="a1", title='<img src=x onerror="1">', updated=now),
            SimpleNamespace(id="b2", title="Plain", updated=now)]
    html = render_chat_list(rows, current="b2")
    assert "<img" not in html and "&lt;img" in html
    assert 'class="rag-chat active" data-chat="b2"' in html and 'class="rag-chat" data-chat="a1"' in html


def test_the_page_has_the_conversation_controls(rag):
    demo = build_app(rag)
    ids = {c.get("props", {}).get("elem_id") for c in demo.get_config_file()["components"]}
    assert {"chat-list", "chat-title", "chat-rename", "chat-delete", "chat-delete-yes", "chat-export"} <= ids


def test_rag_auth_takes_several_logins(make_settings):
    several = make_settings(auth="alice:pw-a,bob:pw-b")
    assert several.auth_users() == [("alice", "pw-a"), ("bob", "pw-b")]
    assert launch_options(several)["auth"] == [("alice", "pw-a"), ("bob", "pw-b")]
    assert several.auth_pair() == ("alice", "pw-a")
    # A password with a comma (and no second login after it) stays one login, as before.
    assert make_settings(auth="me:se,cret").auth_users() == [("me", "se,cret")]
    assert launch_options(make_settings(auth="me:secret"))["auth"] == ("me", "secret")
