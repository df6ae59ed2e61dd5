"""Passage states with the real small model (SmolLM2): each passage read once alone, its state
saved under what it holds, and a prompt put together from several of them (positions moved,
numbers re-read) that the model answers from as if it had read the passages."""

from __future__ import annotations

import numpy as np
import pytest

from rag.models import small_llm_path
from rag.passage_states import StateFolder, block_text, covering, state_key, system_message
from rag.pipeline import Rag

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
    settings = make_settings(generator="llamacpp", llm_model_path=small_llm_path(), prompt_context="stitched",
                             llm_context_tokens=2048, llm_max_tokens=16, llm_threads=1, relevance_floor=-1.0,
                             prompt_passages=3, llm_parallel=1)
    rag = Rag(settings)
    rag.index()
    return rag


def save_all(rag: Rag):
    gen = rag.generator()
    read = rag.planner.passage_states.save_now(gen, gen.fingerprint, rag.handle.chunks())
    return gen, read


def first_token_distribution(gen, request) -> np.ndarray:
    ids = list(range(gen._llm.n_vocab()))
    return np.array(gen._first_token(request, ids))


def fresh(gen) -> None:
    gen._llm.reset()
    gen._engine._prefix = None


def test_a_prompt_from_one_saved_passage_is_exactly_the_prompt_read_whole(rag):
    gen, read = save_all(rag)
    assert read == len(rag.handle.chunks())
    request = rag.request_for(QUESTION, rag.retrieve(QUESTION), gen)
    one = request.model_copy(update={"passages": request.passages[:1], "messages": [
        request.messages[0].model_copy(update={"content": system_message([request.passages[0].chunk])}),
        request.messages[1]]})
    fresh(gen)
    stitched = "".join(gen.stream(one))
    fresh(gen)
    gen._engine.llm.n_tokens = 0
    folder = StateFolder(rag.planner.passage_states.folder)
    key = state_key(gen.fingerprint, one.passages[0].chunk)
    folder.path(key).unlink()  # no state: the passage is read in place, as a plain prompt would
    read_whole = "".join(gen.stream(one))
    assert stitched == read_whole


def test_several_saved_passages_are_put_in_place_renumbered(rag):
    gen, _ = save_all(rag)
    request = rag.request_for(QUESTION, rag.retrieve(QUESTION), gen)
    assert request.passage_states and len(request.passages) >= 2
    assert request.messages[0].content == system_message([h.chunk for h in request.passages])
    fresh(gen)
    stitched = first_token_distribution(gen, request)
    engine = gen._engine
    import llama_cpp

    memory = llama_cpp.llama_get_memory(engine.llm._ctx.ctx)
    n = engine.llm.n_tokens
    # One sequence, positions 0..n-1 without a gap; the tokens are those of the renumbered passages.
    assert llama_cpp.llama_memory_seq_pos_min(memory, 0) == 0
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == n - 1
    start = gen._passages_start()
    blocks = [t for k, h in enumerate(request.passages, 1) for t in gen._tokenize(block_text(k, h.chunk), bos=False)]
    assert list(engine.llm.input_ids[: len(start) + len(blocks)]) == start + blocks
    assert all(llama_cpp.llama_memory_seq_pos_max(memory, s) == -1 for s in (1, 2))  # the helpers' cells freed
    # Read whole instead: the same prompt, every passage attending to the ones before it.
    for h in request.passages:
        StateFolder(rag.planner.passage_states.folder).path(state_key(gen.fingerprint, h.chunk)).unlink()
    fresh(gen)
    whole = first_token_distribution(gen, request)
    assert 0.5 * np.abs(stitched - whole).sum() < 0.35  # close, though each passage was read alone
    assert int(np.argmax(whole)) in np.argsort(-stitched)[:3]


def test_states_are_named_by_content_so_an_edit_rereads_only_its_passages(rag, in_tmp):
    gen, _ = save_all(rag)
    before = {c.id for c in rag.handle.chunks()}
    (in_tmp / "seeds" / "volcanoes.txt").write_text(CORPUS["volcanoes.txt"] + "\nGrimsvotn erupted in 2011.\n")
    rag.index()
    missing = rag.planner.passage_states.missing(gen.fingerprint, rag.handle.chunks())
    assert missing and {c.source for c in missing} == {"volcanoes.txt"}
    assert len(missing) < len(rag.handle.chunks())
    assert {c.id for c in rag.handle.chunks()} != before
    assert rag.planner.passage_states.save_now(gen, gen.fingerprint, rag.handle.chunks()) == len(missing)


def test_the_background_reader_saves_what_questions_need_and_frees_its_context(rag):
    gen = rag.generator()
    chosen = covering(rag.handle.chunks(), rag.retrieve(QUESTION), 3)
    made = []

    def private_copy():
        made.append(gen.private_copy())
        return made[-1]

    states = rag.planner.passage_states
    assert states.read_in_background(gen.fingerprint, chosen, private_copy)
    assert states.wait(timeout=120)
    assert not states.missing(gen.fingerprint, chosen) and states.read_count == len(chosen)
    assert made and made[0]._llm._ctx.ctx is None  # the reader's own context is freed when done
    assert not states.read_in_background(gen.fingerprint, chosen, private_copy)  # nothing left to read


def test_background_reading_waits_while_the_shared_model_answers(rag, monkeypatch):
    from rag.generation import llama_priority as priority

    gen = rag.generator()
    monkeypatch.setattr(priority, "QUIET_SECONDS", 0.0)
    assert priority.wait_until_idle(0.05)
    with gen._engine.use():
        assert not priority.wait_until_idle(0.05)  # an answer holds the model: reading waits
    assert priority.wait_until_idle(0.05)
    private = gen.private_copy()
    try:
        with private._engine.use():  # a background context's own use never holds others back
            assert priority.wait_until_idle(0.05)
    finally:
        private.close()


def test_an_answer_stops_a_background_step_in_flight_and_the_read_comes_out_the_same(rag, monkeypatch):
    import threading

    from rag.generation import llama_priority as priority

    gen = rag.generator()
    monkeypatch.setattr(priority, "QUIET_SECONDS", 0.0)
    tokens = gen._tokenize(" ".join(CORPUS.values()) * 3, bos=True)[:600]

    def read_behind(copy) -> bytes:
        with copy._engine.use():
            copy._engine.read(tokens, background=True)
            return copy._engine.tail_state(0)

    quiet_copy = gen.private_copy()
    try:
        quiet = read_behind(quiet_copy)
    finally:
        quiet_copy.close()
    busy_copy = gen.private_copy()
    done = threading.Event()
    try:
        def answer_often() -> None:  # the shared model taken again and again meanwhile
            while not done.is_set():
                with gen._engine.use():
                    done.wait(0.02)
                done.wait(0.25)  # a gap long enough for a step to go through

        worker = threading.Thread(target=answer_often)
        worker.start()
        try:
            busy = read_behind(busy_copy)
        finally:
            done.set()
            worker.join()
        assert busy_copy._engine.steps_read_again >= 1  # a step in flight was stopped for an answer
        assert busy == quiet  # and read again: the same state as a read never interrupted
    finally:
        busy_copy.close()
