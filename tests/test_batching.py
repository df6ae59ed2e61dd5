"""Several answers at once from the real small model (SmolLM2): one batch, one context, each
answer its own sequence; the same text as alone, stops and failures that stay local, a place in
the queue while waiting, and a corpus state read in the batch that answers as reading whole."""

from __future__ import annotations

import threading

import pytest

from rag.corpus_cache import state_path
from rag.errors import GeneratorError
from rag.generation.batch_jobs import Job
from rag.models import small_llm_path
from rag.pipeline import Rag
from rag.prompting import SYSTEM_PROMPT
from rag.types import GenerationRequest, Message, Note

from fakes import write_corpus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(small_llm_path() is None, reason="SmolLM2 not installed: make install-test"),
]
pytest.importorskip("llama_cpp")
PASSAGES = ("Passage [1] (rivers.txt): The Rhine reaches the North Sea in the Netherlands.\n\n"
            "Passage [2] (volcanoes.txt): Katla last erupted in 1918 and lies under the Myrdalsjokull glacier.")
QUESTIONS = ("Where does the Rhine reach the sea?", "When did Katla last erupt?", "What covers Katla?",
             "Which country does the Rhine end in?")


@pytest.fixture(scope="module")
def gen():
    from rag.generation.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator(small_llm_path(), context_tokens=2048, threads=1, parallel=3)


def ask(question: str, max_tokens: int = 32) -> GenerationRequest:
    return GenerationRequest(question=question, passages=[], max_tokens=max_tokens, temperature=0.1, messages=[
        Message(role="system", content=SYSTEM_PROMPT),
        Message(role="user", content=f"{PASSAGES}\n\nQuestion: {question}\nAnswer:")])


def tokens_of(gen, request: GenerationRequest) -> list[int]:
    return gen._tokenize(gen._format(request.messages), bos=True, special=True)


def together(calls) -> list:
    out: list = [None] * len(calls)

    def run(i: int) -> None:
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_answers_written_together_are_the_answers_written_alone(gen):
    def alone(question: str) -> str:
        gen._batcher.forget()  # each from an empty context, as together
        return "".join(gen.stream(ask(question)))

    alone_texts = [alone(q) for q in QUESTIONS[:3]]
    gen._batcher.forget()
    both = together([lambda q=q: "".join(gen.stream(ask(q))) for q in QUESTIONS[:3]])
    assert both == alone_texts
    assert all(text.strip() for text in alone_texts)
    assert gen._batcher.widest >= 2  # they did share steps


def test_a_stopped_answer_frees_its_cells_and_a_finished_one_keeps_them_for_the_next(gen):
    batch = gen._batcher
    long = batch.submit(Job(tokens_of(gen, ask(QUESTIONS[0], 200)), max_tokens=200, temperature=0.1, seed=3))
    pieces = long.pieces()
    next(p for p in pieces if not isinstance(p, Note))  # writing
    assert long.slot is not None and batch.cells(long.slot) > 0
    pieces.close()  # the caller is gone (Stop in the page, a closed connection)
    assert long.done.wait(30)
    assert batch.cells(long.slot) == 0

    short = batch.submit(Job(tokens_of(gen, ask(QUESTIONS[1])), max_tokens=4, temperature=0.1, seed=3))
    short.wait()
    assert batch.cells(short.slot) >= len(short.tokens)  # kept: the next question from this chat reads less


def test_a_batch_that_fails_fails_only_its_own_request(gen):
    batch = gen._batcher
    request = ask(QUESTIONS[1])
    alone = "".join(gen.stream(request))
    good = Job(tokens_of(gen, request), max_tokens=request.max_tokens, temperature=0.1, seed=1234,
               probes=[gen._refusal_token])
    bad = Job([*tokens_of(gen, ask(QUESTIONS[2]))[:-1], gen._llm.n_vocab() + 7], max_tokens=8)  # no such token
    with batch._cv:  # both join the same step
        batch.submit(good)
        batch.submit(bad)
    with pytest.raises(GeneratorError, match="could not read"):
        bad.wait()
    assert "".join(p for p in good.pieces()) == alone
    assert batch.cells(bad.slot) == 0


def test_a_request_waits_for_a_free_sequence_and_is_told_its_place(gen):
    batch = gen._batcher
    jobs = [Job(tokens_of(gen, ask(q, 48)), max_tokens=48, temperature=0.1, seed=5) for q in QUESTIONS]
    with batch._cv:
        for job in jobs:
            batch.submit(job)
        assert [j.position for j in jobs] == [1, 2, 3, 4]
    pieces = list(jobs[3].pieces())  # three sequences: the fourth waits for one
    notes = [p.text for p in pieces if isinstance(p, Note)]
    assert notes and notes[0].startswith("Waiting for the model")
    assert "".join(pieces).strip()
    for job in jobs[:3]:
        job.wait()


def test_a_read_in_the_background_waits_for_answers_then_takes_its_share(gen, monkeypatch):
    from rag.generation import llama_batch

    batch = gen._batcher
    batch.forget()
    long = gen._tokenize("The Rhine flows north through Basel and Cologne. " * 90, bos=True)
    short = batch.submit(Job([*long, 13], probes=[13]))
    reading = batch.submit(Job(gen._prefix_tokens("Another system prompt. " * 20), background=True))
    reading.wait()
    assert short.done.is_set()  # a short spell of answers: the read waited for it

    monkeypatch.setattr(llama_batch, "PATIENCE", 0.0)  # as if answers had kept the model busy for long
    batch.forget()
    long = gen._tokenize("The Rhine flows north through Basel and Cologne. " * 90, bos=True)  # ~900 tokens each
    busy = [batch.submit(Job([*long, t], probes=[t])) for t in (11, 12)]  # answers' long readings
    reading = batch.submit(Job(gen._prefix_tokens("A long system prompt. " * 20), background=True))
    reading.wait()
    assert not all(job.done.is_set() for job in busy)  # it did not wait for them to end
    for job in busy:
        job.wait()
        assert job.probabilities is not None


@pytest.fixture
def rag(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    settings = make_settings(generator="llamacpp", llm_model_path=small_llm_path(), prompt_context="auto",
                             llm_context_tokens=2048, llm_max_tokens=24, llm_threads=1, relevance_floor=-1.0,
                             llm_parallel=2)
    rag = Rag(settings)
    rag.index()
    return rag


def test_the_corpus_state_is_read_in_the_batch_saved_and_answers_as_reading_whole(rag):
    gen = rag.generator()
    path = state_path(rag.settings.index_dir, rag.handle.build, gen.fingerprint)
    reader = gen.private_copy()  # with answers batched: a job of the batch, not a second context
    assert not hasattr(reader, "_engine")
    rag.corpus_cache.build_now(path, rag.handle.chunks(), reader)
    reader.close()
    assert path.is_file()
    question = "When did Katla last erupt?"
    request = rag.request_for(question, rag.retrieve(question), gen)
    assert request.prefix_state == str(path)
    from_state = "".join(gen.stream(request))
    alone = gen.private_copy_alone()  # one sequence, reading the whole prompt
    try:
        whole = "".join(alone.stream(request.model_copy(update={"prefix_state": None})))
        # a state saved by a batch loads only into a batch as wide: one at a time looks elsewhere
        assert state_path(rag.settings.index_dir, rag.handle.build, alone.fingerprint) != path
    finally:
        alone.close()
    assert from_state == whole and from_state.strip()


def test_the_answer_after_its_reading_takes_the_kept_sequence_before_others_waiting(gen):
    from rag.judge import judge_request

    batch = gen._batcher
    batch.forget()
    request = ask(QUESTIONS[0], 16)
    reading = batch.submit(Job(tokens_of(gen, judge_request(request)), probes=[gen._refusal_token], follows="q1"))
    reading.wait()
    others = [batch.submit(Job(tokens_of(gen, ask(q, 64)), max_tokens=64, temperature=0.1, seed=9, follows=q))
              for q in QUESTIONS[1:]]  # two take the free sequences; the third waits
    answer = batch.submit(Job(tokens_of(gen, request), max_tokens=16, temperature=0.1, seed=9, follows="q1"))
    pieces = answer.pieces()
    next(p for p in pieces if not isinstance(p, Note))
    assert answer.slot == reading.slot  # the kept sequence: only its last line read again
    assert others[-1].position == 1  # still waiting: the answer went first
    "".join(pieces)
    for job in others:
        job.wait()
