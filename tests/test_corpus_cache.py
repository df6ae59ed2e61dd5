"""Cache-augmented generation with the real small model (SmolLM2): the corpus state is saved once
per build, reloaded instead of re-read, and never used for another build or another model."""

from __future__ import annotations

import shutil
import time

import pytest

from rag.corpus_cache import CorpusCache, corpus_system, state_path
from rag.generation.llamacpp import model_fingerprint
from rag.models import small_llm_path
from rag.pipeline import Rag
from rag.types import Chunk

from fakes import CORPUS, write_corpus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(small_llm_path() is None, reason="SmolLM2 not installed: make install-test"),
]
pytest.importorskip("llama_cpp")
QUESTION = "When did Katla last erupt?"


@pytest.fixture
def rag(make_settings, in_tmp):  # answers one at a time (batched: tests/test_batching.py)
    write_corpus(in_tmp / "seeds")
    settings = make_settings(generator="llamacpp", llm_model_path=small_llm_path(), prompt_context="auto",
                             llm_context_tokens=2048, llm_max_tokens=24, llm_threads=1, relevance_floor=-1.0,
                             llm_parallel=1)
    rag = Rag(settings)
    rag.index()
    return rag


def saved_state(rag: Rag):
    gen = rag.generator()
    path = state_path(rag.settings.index_dir, rag.handle.build, gen.fingerprint)
    rag.corpus_cache.build_now(path, rag.handle.chunks(), gen)
    return gen, path


def test_the_state_is_saved_under_the_build_and_model_and_used_by_answers(rag):
    gen, path = saved_state(rag)
    assert path.is_file() and rag.handle.build in path.name and gen.fingerprint in path.name
    request = rag.request_for(QUESTION, rag.retrieve(QUESTION), gen)
    assert request.prefix_state == str(path)
    assert [p.chunk.id for p in request.passages] == [c.id for c in rag.handle.chunks()]
    assert request.messages[0].content == corpus_system(rag.handle.chunks())
    user = request.messages[1].content
    assert QUESTION in user and "Passage [" not in user  # per question: hints, sentences, question
    answer = rag.ask(QUESTION)
    assert answer.citations == [] or all(c.verified for c in answer.citations)


def test_a_reloaded_state_answers_exactly_as_reading_the_corpus_again(rag):
    gen, path = saved_state(rag)
    request = rag.request_for(QUESTION, rag.retrieve(QUESTION), gen)
    gen._llm.reset()  # a fresh context: the state must come from the file
    gen._engine._prefix = None
    from_file = "".join(gen.stream(request))
    assert gen._engine._prefix is not None and gen._engine._prefix[0] == str(path)
    gen._llm.reset()
    gen._engine._prefix = None
    read_again = "".join(gen.stream(request.model_copy(update={"prefix_state": None})))
    assert from_file == read_again


def test_a_new_build_never_uses_the_old_state(rag, in_tmp):
    gen, old = saved_state(rag)
    (in_tmp / "seeds" / "volcanoes.txt").write_text(CORPUS["volcanoes.txt"] + "\nGrimsvotn erupted in 2011.\n")
    rag.index()
    assert rag.corpus_cache.ready(rag.handle.build, gen.fingerprint) is None
    request = rag.request_for(QUESTION, rag.retrieve(QUESTION), gen)
    assert request.prefix_state is None  # served from the windowed prompt meanwhile
    assert "Katla" in request.messages[1].content
    new = state_path(rag.settings.index_dir, rag.handle.build, gen.fingerprint)
    rag.corpus_cache.build_now(new, rag.handle.chunks(), gen)
    assert new.is_file() and not old.exists()  # the stale state is removed
    assert rag.request_for(QUESTION, rag.retrieve(QUESTION), gen).prefix_state == str(new)


def test_another_model_has_another_fingerprint(tmp_path):
    model = small_llm_path()
    copy = tmp_path / "other.gguf"
    shutil.copyfile(model, copy)
    assert model_fingerprint(copy) == model_fingerprint(model)
    with copy.open("r+b") as fh:  # one byte differs: another model as far as the state goes
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert model_fingerprint(copy) != model_fingerprint(model)


def test_warm_up_loads_the_saved_state(rag):
    gen, path = saved_state(rag)
    gen._llm.reset()
    gen._engine._prefix = None
    rag.warm_up()
    assert gen._engine._prefix is not None and gen._engine._prefix[0] == str(path)


def test_the_background_build_frees_its_own_context(rag):
    gen = rag.generator()
    made = []

    def private_copy():
        made.append(gen.private_copy())
        return made[-1]

    assert rag.corpus_cache.build_in_background(rag.handle.build, gen.fingerprint, rag.handle.chunks(), private_copy)
    while rag.corpus_cache.building():
        time.sleep(0.2)
    assert rag.corpus_cache.ready(rag.handle.build, gen.fingerprint) is not None
    # The copy's native context is gone once the state is saved; the shared model still answers.
    assert made and made[0]._llm._ctx.ctx is None
    assert gen._llm._ctx.ctx is not None
    gen.close()  # closing the shared model is a no-op
    assert gen._llm._ctx.ctx is not None


def test_a_failed_background_build_frees_its_context_too(tmp_path):
    class Copy:
        closed = False

        def save_prefix(self, system, path):
            raise OSError("disk full")

        def close(self):
            Copy.closed = True

    cache = CorpusCache(tmp_path)
    assert cache.build_in_background("b1", "f1", [Chunk(id="c", source="a.txt", ordinal=0, text="Katla erupted.",
                                                         start_char=0, end_char=14, start_line=1, end_line=1,
                                                         tokens=3)], Copy)
    while cache.building():
        time.sleep(0.05)
    assert Copy.closed and "disk full" in next(iter(cache.failed.values()))
