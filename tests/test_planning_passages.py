"""The plan stage on a folder larger than the model's context (deterministic fakes): the best
passages from their saved states once saved, the excerpts meanwhile, the missing states read in
the background, an edit costing only its own passages, and the disk bound kept."""

from __future__ import annotations

import os
import time

from rag import generation
from rag.passage_states import StateFolder, state_key
from rag.pipeline import Rag

from fakes import CORPUS, ReadingGenerator, write_corpus

KATLA = "When did Katla last erupt?"


class Keeper(ReadingGenerator):
    """A plug-in model that keeps what it reads, as the local model does: a whole corpus
    (PrefixCache) and passage by passage (PassageCache). With a small context the toy corpus
    outgrows it, as a real folder outgrows the local model's."""

    fingerprint = "keeper-1"

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.read_passages: list[str] = []
        self.closed = 0

    def read_passage(self, text: str, *, background: bool = False) -> bytes:
        self.read_passages.append(text)
        return text.encode() * 4

    def start_passages(self) -> None:
        pass

    def save_prefix(self, system: str, path) -> int:
        path.write_text(system, encoding="utf-8")
        return len(system.split())

    def preload(self, path) -> None:
        pass

    def private_copy(self) -> "Keeper":
        return self

    def close(self) -> None:
        self.closed += 1


def make_rag(make_settings, in_tmp, gen: Keeper, **options) -> Rag:
    gen.name = "keeper"
    generation.register("keeper", lambda settings, embedder: gen)
    write_corpus(in_tmp / "seeds")
    rag = Rag(make_settings(generator="keeper", relevance_floor=-1.0, prompt_passages=2, **options))
    rag.index()
    return rag


def test_auto_reads_excerpts_until_the_passage_states_are_saved_then_uses_them(make_settings, in_tmp):
    gen = Keeper(context_tokens=300)  # the toy corpus does not fit: a "large" folder
    try:
        rag = make_rag(make_settings, in_tmp, gen)
        first = rag.ask(KATLA)
        assert gen.requests[0].passage_states is None  # nothing saved yet: the excerpts
        assert first.text
        assert rag.planner.passage_states.wait(timeout=10)
        assert gen.read_passages  # the missing states were read in the background
        rag.ask(KATLA)
        request = gen.requests[-1]
        assert request.passage_states == str(rag.planner.passage_states.folder)
        assert 1 <= len(request.passages) <= 2
        assert request.messages[0].content.count("Passage [") == len(request.passages)
        assert "Passage [" not in request.messages[1].content  # only the question is read
        assert any(h.chunk.source == "volcanoes.txt" for h in request.passages)
    finally:
        generation.unregister("keeper")


def test_a_corpus_that_fits_is_read_whole_not_passage_by_passage(make_settings, in_tmp):
    gen = Keeper(context_tokens=8192)
    try:
        rag = make_rag(make_settings, in_tmp, gen)
        rag.ask(KATLA)
        assert gen.requests[-1].passage_states is None
        assert not rag.planner.passage_states.reading() and gen.read_passages == []
    finally:
        generation.unregister("keeper")


def test_an_edit_rereads_only_the_edited_documents_passages(make_settings, in_tmp):
    gen = Keeper(context_tokens=300)
    try:
        rag = make_rag(make_settings, in_tmp, gen)
        states = rag.planner.passage_states
        states.save_now(gen, gen.fingerprint, rag.handle.chunks())
        read_before = len(gen.read_passages)
        assert read_before == len(rag.handle.chunks())
        (in_tmp / "seeds" / "volcanoes.txt").write_text(CORPUS["volcanoes.txt"] + "\nGrimsvotn erupted in 2011.\n")
        rag.index()
        states.save_now(gen, gen.fingerprint, rag.handle.chunks())
        reread = gen.read_passages[read_before:]
        assert reread and all("volcanoes.txt" in text for text in reread)
    finally:
        generation.unregister("keeper")


def test_the_disk_bound_removes_the_least_recently_used_states_first(tmp_path):
    folder = StateFolder(tmp_path, max_bytes=2500)
    for n in range(5):
        folder.save(f"k{n}", b"x" * 1000)
        os.utime(folder.path(f"k{n}"), (time.time() - 100 + n, time.time() - 100 + n))
    assert folder.load("k0") is not None  # used now: the newest
    removed = folder.evict(keep={"k1"})
    assert removed == 3
    assert {p.stem for p in tmp_path.glob("*.kv")} == {"k0", "k1"}
    assert folder.usage() == (2, 2000)


def test_a_state_key_changes_with_the_passage_and_the_model_not_the_build(make_settings, in_tmp):
    gen = Keeper(context_tokens=300)
    try:
        rag = make_rag(make_settings, in_tmp, gen)
        chunk = rag.handle.chunks()[0]
        assert state_key("m1", chunk) == state_key("m1", chunk.model_copy(update={"id": "another-build"}))
        assert state_key("m1", chunk) != state_key("m2", chunk)
        assert state_key("m1", chunk) != state_key("m1", chunk.model_copy(update={"text": chunk.text + " More."}))
    finally:
        generation.unregister("keeper")


def test_the_page_says_what_is_being_read_ahead_while_answers_go_on(make_settings, in_tmp):
    import threading

    from ui.rendering import render_status

    release = threading.Event()

    class Slow(Keeper):
        def read_passage(self, text: str, *, background: bool = False) -> bytes:
            release.wait(10)
            return super().read_passage(text, background=background)

    gen = Slow(context_tokens=300)
    try:
        rag = make_rag(make_settings, in_tmp, gen)
        assert rag.planner.preparing() is None
        answer = rag.ask(KATLA)  # answered meanwhile, from excerpts
        assert answer.text and gen.requests[-1].passage_states is None
        note = rag.planner.preparing()
        assert note is not None and "passages" in note and f"of {len(rag.handle.chunks())}" in note
        assert note in render_status(rag.status(), preparing=note).replace("&#x27;", "'")
        release.set()
        assert rag.planner.passage_states.wait(timeout=10)
        assert rag.planner.preparing() is None
    finally:
        release.set()
        generation.unregister("keeper")
