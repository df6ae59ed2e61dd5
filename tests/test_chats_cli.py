"""`rag chats list` and `rag chats export ID` over a store written by the library."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rag.chats import FILE_NAME, ChatStore
from rag.cli import app
from rag.types import Answer, Citation

runner = CliRunner()


@pytest.fixture
def saved(in_tmp):
    store = ChatStore(in_tmp / "index" / FILE_NAME)
    cite = Citation(marker=1, source="volcanoes.txt", start_line=3, end_line=3, quote="Hekla erupted in 1947", score=1)
    shared = store.append("", None, Answer(question="When did Hekla erupt?", text="In 1947 [1].", citations=[cite],
                                           generator="extractive"))
    private = store.append("alice", None, Answer(question="Alice asks?", text="x", generator="extractive"))
    return shared, private


def test_list_shows_the_shared_conversations_or_one_users(saved):
    shared, private = saved
    listed = runner.invoke(app, ["chats", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [c["id"] for c in json.loads(listed.output)] == [shared.id]
    alice = runner.invoke(app, ["chats", "list", "--user", "alice"])
    assert private.id in alice.output and "Alice asks?" in alice.output and shared.id not in alice.output


def test_export_prints_markdown_with_the_sources(saved, in_tmp):
    shared, _ = saved
    exported = runner.invoke(app, ["chats", "export", shared.id])
    assert exported.exit_code == 0, exported.output
    assert exported.output.startswith("# When did Hekla erupt?")
    assert "- [1] `volcanoes.txt`, line 3: “Hekla erupted in 1947”" in exported.output

    target = in_tmp / "out.md"
    assert runner.invoke(app, ["chats", "export", shared.id, "-o", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == exported.output


def test_export_of_another_users_conversation_is_not_found(saved):
    _, private = saved
    refused = runner.invoke(app, ["chats", "export", private.id])
    assert refused.exit_code != 0
    assert "no conversation" in str(refused.exception)
