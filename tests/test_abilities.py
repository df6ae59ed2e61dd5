"""A new generator gets every ability it declares, and none it does not: abilities are protocols
checked in one place (rag.generation.abilities), never a backend's name."""

from __future__ import annotations

import time
from pathlib import Path

from rag import generation
from rag.generation import abilities
from rag.pipeline import Rag

from fakes import CORPUS, ReadingGenerator, ScriptedGenerator, write_corpus

KATLA = "When did Katla last erupt?"


class Thorough(ReadingGenerator):
    """A plug-in model that keeps what it reads (PrefixCache), reads for the decision (Reader),
    reads its system prompt ahead (Warmable) and holds something to free (Closable)."""

    fingerprint = "thorough-1"

    def __init__(self, *readings, **options) -> None:
        super().__init__(*readings, **options)
        self.saved: list[Path] = []
        self.loaded: list[Path] = []
        self.warmed: list[str] = []
        self.closed = 0

    def save_prefix(self, system: str, path: Path) -> int:
        path.write_text(system, encoding="utf-8")
        self.saved.append(path)
        return len(system.split())

    def preload(self, path: Path) -> None:
        self.loaded.append(path)

    def private_copy(self) -> "Thorough":
        return self

    def warm(self, system: str) -> None:
        self.warmed.append(system)

    def close(self) -> None:
        self.closed += 1


def register(gen: ScriptedGenerator, name: str) -> None:
    gen.name = name
    generation.register(name, lambda settings, embedder: gen)


def test_a_new_generator_gets_every_ability_it_declares(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    gen = Thorough(0.97, 0.97)
    register(gen, "thorough")
    try:
        rag = Rag(make_settings(generator="thorough", relevance_floor=-1.0))
        rag.index()
        assert abilities.prefix_cache(gen) is gen and abilities.reader(gen) is gen
        rag.warm_up()  # no corpus state yet: it is read in the background, the system prompt now
        deadline = time.monotonic() + 10
        while not gen.saved and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gen.saved and gen.warmed
        while rag.corpus_cache.building():
            time.sleep(0.02)
        rag.warm_up()  # the state is saved: it is loaded ahead of the first question
        assert gen.loaded == [gen.saved[0]]
        answer = rag.ask(KATLA)
        assert gen.requests[-1].prefix_state == str(gen.saved[0])  # the corpus prompt
        assert gen.judged and gen.judged[0].messages[0] == gen.requests[-1].messages[0]  # it read first
        assert not answer.refused
        rag.close()
        assert gen.closed >= 1
    finally:
        generation.unregister("thorough")


def test_a_generator_that_declares_nothing_gets_nothing_assumed(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    gen = ScriptedGenerator(default="Katla last erupted in 1918 [1].")
    register(gen, "plain")
    try:
        rag = Rag(make_settings(generator="plain", relevance_floor=-1.0))
        rag.index()
        assert abilities.prefix_cache(gen) is None and abilities.reader(gen) is None
        rag.warm_up()
        answer = rag.ask(KATLA)
        request = gen.requests[-1]
        assert request.prefix_state is None  # no corpus prompt for a model that cannot keep it
        # passages whole, as for any endpoint (auto): every retrieved passage's text, unshortened
        assert all(h.chunk.text in CORPUS[h.chunk.source] for h in request.passages)
        assert not rag.corpus_cache.building() and not (in_tmp / "index" / "kv").exists()
        assert answer.text
    finally:
        generation.unregister("plain")


def test_the_registry_not_the_name_says_who_reads_for_every_backend(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    reader = ReadingGenerator(0.02)  # says no
    register(reader, "resident")
    writer = ScriptedGenerator(default="Katla last erupted in 1918 [1].")
    register(writer, "remote")
    saved = generation.local_backend()
    try:
        if saved is not None:
            generation.register(saved.name, saved.factory, parallel=saved.parallel, fallback=saved.fallback,
                                prepare=saved.prepare)  # the built-in no longer the local model
        generation.register("resident", lambda settings, embedder: reader, local=True)
        rag = Rag(make_settings(generator="remote", relevance_floor=-1.0, answerability_reader="local"))
        rag.index()
        answer = rag.ask(KATLA)
        assert reader.judged and answer.refused and answer.decided_by == "reading"
        assert writer.requests == []  # refused before the writing model was asked
    finally:
        generation.unregister("resident")
        generation.unregister("remote")
        if saved is not None:
            generation.register(saved.name, saved.factory, parallel=saved.parallel, local=True,
                                fallback=saved.fallback, prepare=saved.prepare)
