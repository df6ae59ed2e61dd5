"""The llamacpp backend for real: SmolLM2-135M in-process (it invents facts; check structure only)."""

from __future__ import annotations

import pytest

from rag.citations import MARKER
from rag.config import load_settings
from rag.models import small_llm_path
from rag.pipeline import Rag
from rag.prompting import REFUSAL

from fakes import HASHING_FLOOR, check_answer_structure, write_corpus

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(small_llm_path() is None, reason="SmolLM2 not installed: make install-test"),
    pytest.mark.timeout(300),
]

DANUBE = "Which cities stand on the Danube?"


@pytest.fixture
def small_model_env(in_tmp, monkeypatch):
    """The product configured the way a user would: RAG_* variables, the small model by path."""
    pytest.importorskip("llama_cpp")
    write_corpus(in_tmp / "seeds")
    for key, value in {
        "RAG_SEEDS_DIR": str(in_tmp / "seeds"),
        "RAG_INDEX_DIR": str(in_tmp / "index"),
        "RAG_EMBEDDING_MODEL": "hashing-256",
        "RAG_CHUNK_TOKENS": "24",
        "RAG_CHUNK_OVERLAP": "0",
        "RAG_RELEVANCE_FLOOR": str(HASHING_FLOOR),
        # The reading's weights are the default model's; a 135M model's yes/no is noise, so these
        # structure tests leave it out (the reading test below turns it on).
        "RAG_ANSWERABILITY_READ_THRESHOLD": "0",
        "RAG_TOP_K": "3",
        "RAG_LLM_MODEL_PATH": str(small_llm_path()),
        "RAG_LLM_MAX_TOKENS": "48",
        "RAG_LLM_CONTEXT_TOKENS": "2048",
        "RAG_LLM_TEMPERATURE": "0",
        # One thread: a 135M model gains little from two, and llama.cpp's spinning thread barrier
        # collapses when the suite shares the cores with other work.
        "RAG_LLM_THREADS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    return in_tmp


def test_llamacpp_streams_a_grounded_answer(small_model_env):
    rag = Rag(load_settings(generator="llamacpp"))
    stream = rag.ask_stream(DANUBE)
    pieces = list(stream)
    assert len(pieces) > 1  # token by token, not one block at the end
    answer = stream.answer
    assert answer is not None
    check_answer_structure(answer, "llamacpp")
    assert answer.timings.first_token is not None
    assert answer.timings.first_token <= answer.timings.total
    if not answer.refused:
        # the answer is the streamed text with markers checked (or added by attribution)
        squash = lambda s: "".join(MARKER.sub("", s).split())  # noqa: E731
        assert squash(answer.text) == squash("".join(pieces))


def test_auto_picks_the_installed_model(small_model_env):
    # Same prompt as above: llama.cpp reuses the cached prompt, so this call is cheap.
    answer = Rag(load_settings(generator="auto")).ask(DANUBE)
    check_answer_structure(answer, "llamacpp")


def test_off_topic_refusal_never_calls_the_model(small_model_env, monkeypatch):
    rag = Rag(load_settings(generator="llamacpp"))
    gen = rag.generator()

    def fail(_request):
        raise AssertionError("the model was called for an off-topic question")

    monkeypatch.setattr(gen, "stream", fail)
    answer = rag.ask("Quantum chromodynamics gluon confinement?")
    assert answer.refused and answer.generator == "llamacpp"


def test_the_models_own_doubt_refuses_at_the_threshold(small_model_env, monkeypatch):
    """The refusal gate reads the model's first-token probability of the refusal: at threshold 0
    every answer is that refusal (and only it), at 1 the gate never fires."""
    monkeypatch.setenv("RAG_LLM_REFUSAL_THRESHOLD", "0")
    stream = Rag(load_settings(generator="llamacpp")).ask_stream(DANUBE)
    assert list(stream) == [REFUSAL]
    assert stream.answer.refused and stream.answer.citations == []

    monkeypatch.setenv("RAG_LLM_REFUSAL_THRESHOLD", "1")
    answer = Rag(load_settings(generator="llamacpp")).ask(DANUBE)
    assert answer.text != REFUSAL


def test_the_models_reading_refuses_the_unanswerable_and_answers_the_answerable(small_model_env, monkeypatch):
    """The answerability decision with a real model's yes/no reading: one short pass over the
    same passages; a question they clearly answer is answered, one about a fact they do not hold
    is refused, saying the model said no."""
    monkeypatch.setenv("RAG_LLM_REFUSAL_THRESHOLD", "1")  # only the reading decides here
    monkeypatch.delenv("RAG_ANSWERABILITY_READ_THRESHOLD")  # the shipped threshold
    for key in ("RAG_EMBEDDING_MODEL", "RAG_RELEVANCE_FLOOR", "RAG_CHUNK_TOKENS", "RAG_CHUNK_OVERLAP"):
        monkeypatch.delenv(key)  # the packaged embedding model and shipped chunking, as a user has them
    rag = Rag(load_settings(generator="llamacpp"))
    rag.index()
    gen = rag.generator()
    answerable = "Which river flows through Vienna?"
    unanswerable = "Which river flows through Vienna in the year 3000 on Mars?"
    readings = {}
    for question in (answerable, unanswerable):
        hits = rag.retrieve(question)
        readings[question] = gen.judge(rag.request_for(question, hits, gen))
    assert 0.0 <= readings[unanswerable] < readings[answerable] <= 1.0
    answered = rag.ask(answerable)
    assert not answered.refused, answered.fallback_reason
    refused = rag.ask(unanswerable)
    assert refused.refused and refused.text == REFUSAL
    assert "the model said no" in refused.fallback_reason
