"""Saved conversations (rag.chats): the SQLite store, its owners, its schema and its transactions."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rag.chats import (
    FILE_NAME,
    SCHEMA_VERSION,
    ChatStore,
    ChatStoreError,
    ConversationNotFoundError,
    document_hashes,
    short_title,
    to_markdown,
)
from rag.types import Answer, Citation

REPO_ROOT = Path(__file__).resolve().parents[1]


def answer(question: str, text: str = "Hekla erupted in 1947 [1].", source: str = "volcanoes.txt") -> Answer:
    cite = Citation(marker=1, source=source, start_line=3, end_line=4, quote="Hekla erupted in 1947", score=0.9)
    return Answer(question=question, text=text, citations=[cite], generator="extractive")


@pytest.fixture
def store(tmp_path: Path) -> ChatStore:
    return ChatStore(tmp_path / "index" / FILE_NAME)


def rows(store: ChatStore, table: str) -> int:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_conversation_is_created_appended_listed_and_read_back(store):
    first = store.append("", None, answer("When did Hekla erupt?"), {"volcanoes.txt": "h1"})
    store.append("", first.id, answer("And Katla?", "Katla in 1918 [1]."), {"volcanoes.txt": "h1"})

    [listed] = store.list("")
    assert listed.id == first.id and listed.title == "When did Hekla erupt?"
    thread = store.get(first.id, "")
    assert [t.question for t in thread.turns] == ["When did Hekla erupt?", "And Katla?"]
    assert thread.turns[1].answer.text == "Katla in 1918 [1]."
    # The whole Answer comes back: citations with their lines and quotes.
    assert thread.turns[0].answer.citations[0].start_line == 3
    assert thread.turns[0].document_hashes == {"volcanoes.txt": "h1"}
    assert listed.updated >= listed.created


def test_the_list_is_newest_first(store):
    older = store.append("", None, answer("First question?"))
    newer = store.append("", None, answer("Second question?"))
    assert [c.id for c in store.list("")] == [newer.id, older.id]
    store.append("", older.id, answer("A follow-up?"))  # activity brings a conversation back up
    assert [c.id for c in store.list("")] == [older.id, newer.id]


def test_rename_delete_and_an_empty_created_conversation(store):
    made = store.create("", "Notes")
    assert store.get(made.id, "").turns == [] and store.list("")[0].title == "Notes"
    kept = store.append("", None, answer("When did Hekla erupt?"))
    assert store.rename(kept.id, "", "  Volcano   dates ").title == "Volcano dates"
    assert {c.title for c in store.list("")} == {"Notes", "Volcano dates"}
    assert store.rename(kept.id, "", "").title == "When did Hekla erupt?", "blank: back to the first question"

    store.delete(made.id, "")
    assert [c.id for c in store.list("")] == [kept.id]
    with pytest.raises(ConversationNotFoundError):
        store.get(made.id, "")
    store.delete(kept.id, "")
    assert rows(store, "turns") == 0 and rows(store, "cited_documents") == 0, "a turn goes with its conversation"


def test_one_owner_never_sees_or_changes_anothers_conversations(store):
    alice = store.append("alice", None, answer("Alice's question?"))
    bob = store.append("bob", None, answer("Bob's question?"))

    assert [c.id for c in store.list("alice")] == [alice.id]
    assert [c.id for c in store.list("bob")] == [bob.id]
    assert store.list("") == []
    for call in (lambda: store.get(alice.id, "bob"), lambda: store.rename(alice.id, "bob", "mine"),
                 lambda: store.delete(alice.id, "bob"), lambda: store.export_markdown(alice.id, "bob"),
                 lambda: store.append("bob", alice.id, answer("Sneaky?"))):
        with pytest.raises(ConversationNotFoundError):
            call()
    thread = store.get(alice.id, "alice")
    assert thread.conversation.title == "Alice's question?" and len(thread.turns) == 1


def test_a_newer_schema_is_refused_with_a_clear_error(store):
    store.list("")
    with sqlite3.connect(store.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ChatStoreError, match=r"newer version of rag \(schema 2; this one reads up to 1\)"):
        ChatStore(store.path).list("")


def test_the_file_is_in_wal_mode_with_its_schema_version(store):
    store.list("")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_failure_in_the_middle_of_a_write_leaves_nothing_half_written(store):
    kept = store.append("", None, answer("When did Hekla erupt?"), {"volcanoes.txt": "h1"})
    # The turn row is in, the first cited document too, then the second cannot be written.
    broken = {"volcanoes.txt": "h1", "other.txt": object()}
    with pytest.raises(ChatStoreError):
        store.append("", kept.id, answer("And Katla?"), broken)
    with pytest.raises(ChatStoreError):
        store.append("", None, answer("A new one?"), broken)

    assert [c.id for c in store.list("")] == [kept.id], "the new conversation was not left behind"
    assert [t.question for t in store.get(kept.id, "").turns] == ["When did Hekla erupt?"]
    assert rows(store, "turns") == 1 and rows(store, "cited_documents") == 1


def test_a_process_killed_while_writing_loses_only_that_turn(store):
    kept = store.append("", None, answer("When did Hekla erupt?"))
    # The child dies (os._exit, no cleanup) while binding the second cited document's hash.
    script = textwrap.dedent(f"""
        import os, sqlite3
        from rag.chats import ChatStore
        from rag.types import Answer
        class Boom: pass
        sqlite3.register_adapter(Boom, lambda value: os._exit(9))
        ChatStore({str(store.path)!r}).append("", {kept.id!r}, Answer(question="Lost?", text="x", generator="g"),
                                            {{"a.txt": "h", "b.txt": Boom()}})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr

    assert [t.question for t in ChatStore(store.path).get(kept.id, "").turns] == ["When did Hekla erupt?"]
    assert rows(store, "cited_documents") == 0


def test_a_changed_or_removed_document_is_flagged_and_an_unchanged_one_is_not(store):
    two = Answer(question="Both?", text="a [1] b [2]", generator="g", citations=[
        Citation(marker=1, source="volcanoes.txt", start_line=1, end_line=1, quote="a", score=1.0),
        Citation(marker=2, source="rivers.txt", start_line=1, end_line=1, quote="b", score=1.0),
    ])
    index = {"volcanoes.txt": "v1", "rivers.txt": "r1", "other.txt": "o1"}
    saved = store.append("", None, two, {c.source: index[c.source] for c in two.citations})
    [turn] = store.get(saved.id, "").turns
    assert turn.document_hashes == {"volcanoes.txt": "v1", "rivers.txt": "r1"}, "only the cited documents"

    assert turn.changed_sources(index) == frozenset()
    assert turn.changed_sources(index | {"volcanoes.txt": "v2"}) == {"volcanoes.txt"}
    assert turn.changed_sources({"volcanoes.txt": "v1"}) == {"rivers.txt"}


def test_markdown_export_lists_each_answers_sources(store):
    saved = store.append("", None, answer("When did Hekla erupt?"))
    store.append("", saved.id, Answer(question="Who won?", text="The documents do not say.", refused=True,
                                      generator="extractive"))
    markdown = store.export_markdown(saved.id, "")

    assert markdown.startswith("# When did Hekla erupt?\n")
    assert "## 1. When did Hekla erupt?\n\nHekla erupted in 1947 [1].\n" in markdown
    assert "- [1] `volcanoes.txt`, lines 3–4: “Hekla erupted in 1947”" in markdown
    assert "## 2. Who won?\n\n_Not in the documents:_ The documents do not say." in markdown
    assert markdown == to_markdown(store.get(saved.id, ""))


def test_titles_are_the_first_question_shortened_at_a_word():
    assert short_title("  When   did\nHekla erupt? ") == "When did Hekla erupt?"
    long = short_title("Which of the volcanoes described in the documents erupted most recently, and when?")
    assert long.endswith("…") and len(long) <= 60 and long.startswith("Which of the volcanoes")
    assert not long[:-1].endswith(" ")


def test_an_unwritable_place_is_a_chat_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ChatStoreError, match="cannot open the conversations file"):
        ChatStore(blocker / FILE_NAME).list("")


def test_the_store_lives_beside_the_index(make_settings):
    settings = make_settings()
    assert ChatStore.for_settings(settings).path == settings.index_dir / FILE_NAME


def test_document_hashes_are_the_index_manifests(make_settings, in_tmp):
    from fakes import CORPUS, write_corpus
    from rag.pipeline import Rag

    write_corpus(in_tmp / "seeds", CORPUS)
    rag = Rag(make_settings())
    assert document_hashes(rag) == {}, "no index yet"
    rag.index()
    manifest = rag.retriever().manifest.documents
    assert document_hashes(rag) == {path: entry.content_hash for path, entry in manifest.items()}
    assert document_hashes(rag, ["volcanoes.txt", "not-indexed.txt"]) == {
        "volcanoes.txt": manifest["volcanoes.txt"].content_hash}
