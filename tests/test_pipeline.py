"""Rag.ask / ask_stream end to end with the hashing embedder and a scripted generator."""

from __future__ import annotations

import pytest

import rag
from rag import generation, pipeline
from rag.citations import parse_markers
from rag.errors import GeneratorError, GeneratorUnavailableError, QuestionError, RagError
from rag.pipeline import AnswerStream, Rag
from rag.prompting import REFUSAL
from rag.types import Answer

from fakes import CORPUS, HASHING_FLOOR, ScriptedGenerator, line_of, register_scripted, scripted, unregister, write_corpus  # noqa: F401

FLOOR = HASHING_FLOOR
KATLA = "When did Katla last erupt?"
DANUBE = "Which cities stand on the Danube?"
OFF_TOPIC = "Quantum chromodynamics gluon confinement?"
KATLA_LINE = line_of(CORPUS["volcanoes.txt"], "Katla")
VIENNA_LINE = line_of(CORPUS["notes/rivers.txt"], "Vienna")


@pytest.fixture
def settings(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    # Sentence-sized chunks and a lower relevance floor, so the hashing embedder's cosine (of the
    # question and a chunk under its header) clears it; off-topic questions share no word and stay under.
    return make_settings(chunk_tokens=24, chunk_overlap=0, generator="scripted", relevance_floor=FLOOR)


@pytest.fixture
def r(settings) -> Rag:
    rag = Rag(settings)
    rag.index()
    return rag


def indexed(rag: Rag) -> Rag:
    rag.index()
    return rag


def file_lines(source: str, start: int, end: int) -> str:
    return "\n".join(CORPUS[source].split("\n")[start - 1 : end])


def assert_grounded(answer: Answer) -> None:
    """Every citation points at real lines of a real file, quoting them."""
    for c in answer.citations:
        assert c.verified, c
        assert " ".join(c.quote.split()) in " ".join(file_lines(c.source, c.start_line, c.end_line).split())


# -- grounded answers ------------------------------------------------------------------------------
def test_answer_cites_the_exact_file_and_lines(r, scripted):
    scripted.enqueue("Katla last erupted in 1918 [1].")
    answer = r.ask(KATLA)
    assert answer.generator == "scripted"
    assert not answer.refused
    assert answer.text == "Katla last erupted in 1918 [1]."
    [c] = answer.citations
    assert (c.marker, c.source, c.start_line, c.end_line) == (1, "volcanoes.txt", KATLA_LINE, KATLA_LINE)
    assert c.quote == "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918."
    assert_grounded(answer)
    # the model saw the numbered passages, best first, with their files and lines
    [request] = scripted.requests
    assert request.question == KATLA
    assert request.passages[0].chunk.source == "volcanoes.txt"
    assert f'[1] (volcanoes.txt, line {KATLA_LINE}; under "Volcanoes of Iceland")' in request.messages[1].content
    assert answer.passages[0].chunk == request.passages[0].chunk
    assert answer.timings.total >= answer.timings.retrieve > 0
    # and, after the passages, the sentence that answers best, with its passage number
    assert ("Most relevant sentences: Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918. [1]"
            in request.messages[1].content)


def test_bad_markers_from_the_model_are_dropped(r, scripted):
    scripted.enqueue("Katla erupted in 1918 [0][1, 9]. Vienna is on the Danube [42]. Again [1][1].")
    answer = r.ask(KATLA, top_k=3)
    assert answer.text == "Katla erupted in 1918 [1]. Vienna is on the Danube. Again [1][1]."
    assert [c.marker for c in answer.citations] == [1]
    assert_grounded(answer)


def test_several_markers_give_one_citation_each(r, scripted):
    scripted.enqueue("Vienna and Budapest stand on the Danube [1]. It reaches the Black Sea [2].")
    answer = r.ask(DANUBE, top_k=2)
    assert [c.marker for c in answer.citations] == [1, 2]
    assert [(c.source, c.start_line) for c in answer.citations] == [
        ("notes/rivers.txt", VIENNA_LINE),
        ("notes/rivers.txt", line_of(CORPUS["notes/rivers.txt"], "The Danube flows")),
    ]
    assert_grounded(answer)


def test_a_marker_on_the_wrong_passage_is_repointed_to_the_one_that_says_it(r, scripted):
    scripted.enqueue("Vienna and Budapest both stand on the Danube [2].")
    answer = r.ask(DANUBE, top_k=2)
    assert answer.passages[0].chunk.start_line == VIENNA_LINE  # passage 1 says it, not passage 2
    assert answer.text == "Vienna and Budapest both stand on the Danube [1]."
    [c] = answer.citations
    assert (c.marker, c.source, c.start_line) == (1, "notes/rivers.txt", VIENNA_LINE)
    assert_grounded(answer)


def test_a_markerless_answer_gets_attributed_markers(r, scripted):
    scripted.enqueue("Vienna and Budapest both stand on the Danube.")
    answer = r.ask(DANUBE)
    assert answer.text == "Vienna and Budapest both stand on the Danube. [1]"
    [c] = answer.citations
    assert (c.source, c.start_line) == ("notes/rivers.txt", VIENNA_LINE)
    assert_grounded(answer)


def test_a_markerless_answer_nothing_supports_stays_uncited(r, scripted):
    # Beside a supported sentence (a draft mostly unsupported is replaced: rag.draft_check).
    scripted.enqueue("Vienna and Budapest both stand on the Danube. Penguins cannot fly.")
    answer = r.ask(DANUBE)
    assert answer.text == "Vienna and Budapest both stand on the Danube. [1] Penguins cannot fly."
    assert [c.marker for c in answer.citations] == [1]


def test_a_file_changed_after_indexing_makes_its_citation_unverified(r, scripted, settings):
    scripted.enqueue("Katla last erupted in 1918 [1].", "Katla last erupted in 1918 [1].")
    assert r.ask(KATLA).citations[0].verified
    path = settings.seeds_dir / "volcanoes.txt"
    tampered = CORPUS["volcanoes.txt"].replace("erupted in 1918", "erupted in 1823")
    path.write_text(tampered, encoding="utf-8")
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime whatever the clock
    [c] = r.ask(KATLA).citations  # same build: the index still holds the old text
    assert c.source == "volcanoes.txt" and not c.verified


# -- refusals --------------------------------------------------------------------------------------
def test_off_topic_question_is_refused_without_a_model_call(r, scripted):
    answer = r.ask(OFF_TOPIC)
    assert answer.refused
    assert answer.text == REFUSAL
    assert answer.citations == []
    assert answer.generator == "scripted"
    assert scripted.calls == 0
    assert answer.passages  # what was looked at is still reported


def test_relevance_floor_decides(make_settings, in_tmp, scripted):
    write_corpus(in_tmp / "seeds")
    strict = indexed(Rag(make_settings(chunk_tokens=24, chunk_overlap=0, generator="scripted", relevance_floor=0.99)))
    assert strict.ask(DANUBE).refused
    assert scripted.calls == 0


def test_model_refusal_becomes_the_refusal_answer(r, scripted):
    scripted.enqueue("I could not find this in the documents [1].")
    answer = r.ask(KATLA)
    assert answer.refused and answer.text == REFUSAL and answer.citations == []
    assert scripted.calls == 1


def test_empty_model_answer_is_a_refusal(r, scripted):
    scripted.enqueue("   ")
    answer = r.ask(KATLA)
    assert answer.refused and answer.text == REFUSAL


# -- questions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("question", ["", "   ", "\n\t ", "\x00\x01", "x" * 2001])
def test_unusable_questions_raise_question_error(r, scripted, question):
    with pytest.raises(QuestionError) as info:
        r.ask(question)
    assert isinstance(info.value, RagError)
    assert scripted.calls == 0


def test_question_is_cleaned_before_use(r, scripted):
    scripted.enqueue("Katla last erupted in 1918 [1].")
    answer = r.ask("  When did\x00 Katla   last erupt?\n")
    assert answer.question == KATLA
    assert scripted.requests[0].question == KATLA


def test_question_limit_is_a_setting(make_settings, in_tmp, scripted):
    write_corpus(in_tmp / "seeds")
    short = Rag(make_settings(chunk_tokens=24, chunk_overlap=0, generator="scripted", relevance_floor=FLOOR, max_question_chars=10))
    with pytest.raises(QuestionError, match="RAG_MAX_QUESTION_CHARS"):
        short.ask(KATLA)


# -- streaming -------------------------------------------------------------------------------------
def test_stream_yields_pieces_then_sets_the_answer(r, scripted):
    raw = "Vienna and Budapest both stand on the Danube [1]. They are capitals [7]."
    scripted.enqueue(raw)
    stream = r.ask_stream(DANUBE)
    assert isinstance(stream, AnswerStream)
    assert stream.answer is None
    pieces = []
    for piece in stream:
        pieces.append(piece)
        assert stream.answer is None  # only after the last piece
    assert len(pieces) == len(raw.split())
    assert "".join(pieces) == raw
    answer = stream.answer
    assert answer is not None
    assert answer.text == parse_markers("".join(pieces), len(answer.passages))[0]
    assert [c.marker for c in answer.citations] == [1]
    assert answer.timings.first_token is not None
    assert answer.timings.retrieve <= answer.timings.first_token <= answer.timings.total


def test_stream_is_lazy(r, scripted):
    stream = r.ask_stream(KATLA)
    assert scripted.calls == 0  # nothing generated until someone iterates
    first = next(iter(stream))
    assert first and scripted.calls == 1


def test_refusal_streams_the_refusal(r, scripted):
    stream = r.ask_stream(OFF_TOPIC)
    assert list(stream) == [REFUSAL]
    assert stream.answer is not None and stream.answer.refused
    assert scripted.calls == 0


def test_extractive_streams_words_that_join_to_the_answer(r):
    stream = r.ask_stream(DANUBE, generator="extractive")
    pieces = list(stream)
    assert len(pieces) > 3
    answer = stream.answer
    assert answer.generator == "extractive"
    assert answer.text == parse_markers("".join(pieces), len(answer.passages))[0]
    assert answer.citations and answer.citations[0].source == "notes/rivers.txt"
    assert_grounded(answer)


# -- failing generators ------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [GeneratorError("boom"), GeneratorUnavailableError("no model")])
def test_a_generator_failing_before_any_text_falls_back_to_extractive(r, scripted, error):
    scripted.enqueue(error)
    answer = r.ask(DANUBE)
    assert answer.generator == "extractive (fallback from scripted)"
    assert "scripted failed" in answer.fallback_reason
    assert answer.citations and answer.citations[0].source == "notes/rivers.txt"
    assert_grounded(answer)


class HalfwayGenerator(ScriptedGenerator):
    def stream(self, request):
        self.requests.append(request)
        yield "Vienna stands on the Danube [1]. "
        raise GeneratorError("the connection dropped")


def test_a_generator_failing_midway_keeps_what_arrived(r):
    register_scripted(HalfwayGenerator(), "halfway")
    try:
        answer = r.ask(DANUBE, generator="halfway")
    finally:
        unregister("halfway")
    assert answer.text.startswith("Vienna stands on the Danube [1].")  # then the names it left out
    assert "incomplete" in answer.fallback_reason
    assert answer.citations[0].verified


# -- choosing the backend --------------------------------------------------------------------------
def test_auto_picks_openai_when_an_endpoint_is_set(make_settings, small_model_or_any_file):
    s = make_settings(generator="auto", openai_base_url="http://127.0.0.1:9/v1", llm_model_path=small_model_or_any_file)
    assert generation.resolve_name("auto", s) == "openai"


def test_auto_picks_llamacpp_when_a_model_is_installed(make_settings, small_model_or_any_file):
    s = make_settings(generator="auto", llm_model_path=small_model_or_any_file)
    assert generation.resolve_name("auto", s) == "llamacpp"


def test_auto_falls_back_to_extractive_and_the_answer_says_so(make_settings, in_tmp, monkeypatch):
    write_corpus(in_tmp / "seeds")
    s = make_settings(chunk_tokens=24, chunk_overlap=0, generator="auto", llm_model_path=in_tmp / "missing.gguf")
    assert generation.resolve_name("auto", s) == "extractive"
    answer = indexed(Rag(s)).ask(DANUBE)
    assert answer.generator == "extractive"
    # no llama_cpp importable: extractive too, even with a model file present
    monkeypatch.setattr(generation, "_llama_importable", lambda: False)
    assert generation.resolve_name("auto", make_settings(llm_model_path=in_tmp / "seeds" / "bread.md")) == "extractive"


def test_an_unreachable_openai_endpoint_falls_back_with_a_reason(make_settings, in_tmp, free_port):
    write_corpus(in_tmp / "seeds")
    s = make_settings(
        chunk_tokens=24, chunk_overlap=0, generator="auto",
        openai_base_url=f"http://127.0.0.1:{free_port}/v1", openai_retries=0, openai_timeout=5,
    )
    answer = indexed(Rag(s)).ask(DANUBE)
    assert answer.generator == "extractive (fallback from openai)"
    assert "cannot reach" in answer.fallback_reason
    assert answer.citations and answer.citations[0].verified


def test_unknown_generator_lists_the_valid_names(r):
    from rag.errors import ConfigError

    with pytest.raises(ConfigError, match="extractive"):
        r.ask(DANUBE, generator="gpt-17")


# -- follow-ups ------------------------------------------------------------------------------------
def test_a_follow_up_is_condensed_and_reported(r, scripted):
    scripted.enqueue("Vienna and Budapest [1].")
    answer = r.ask("And its cities?", history=[(DANUBE, "...")])
    assert answer.standalone_question == "And its cities? (about: stand Danube)"
    assert scripted.requests[0].question == answer.standalone_question


# -- the module-level API --------------------------------------------------------------------------
@pytest.fixture
def env_rag(in_tmp, monkeypatch):
    """`from rag import ask` configured only through RAG_* variables, with a fresh default Rag."""
    write_corpus(in_tmp / "seeds")
    for key, value in {
        "RAG_SEEDS_DIR": str(in_tmp / "seeds"),
        "RAG_INDEX_DIR": str(in_tmp / "index"),
        "RAG_EMBEDDING_MODEL": "hashing-256",
        "RAG_CHUNK_TOKENS": "24",
        "RAG_CHUNK_OVERLAP": "0",
        "RAG_RELEVANCE_FLOOR": str(FLOOR),
        "RAG_GENERATOR": "extractive",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(pipeline, "_default", None)


def test_module_ask_builds_the_index_and_answers_with_citations(env_rag):
    answer = rag.ask(DANUBE)
    assert isinstance(answer, rag.Answer)
    assert answer.generator == "extractive"
    [c] = answer.citations
    assert (c.source, c.start_line, c.end_line) == ("notes/rivers.txt", VIENNA_LINE, VIENNA_LINE)
    assert_grounded(answer)
    assert Answer.model_validate_json(answer.model_dump_json()) == answer


def test_module_ask_stream_and_question_errors(env_rag):
    stream = rag.ask_stream(KATLA)
    assert "".join(stream)
    assert stream.answer.citations[0].start_line == KATLA_LINE
    with pytest.raises(QuestionError):
        rag.ask("   ")


# -- fixtures used above ---------------------------------------------------------------------------
@pytest.fixture
def small_model_or_any_file(in_tmp):
    """A path that exists: `auto` only checks that the model file is there."""
    from rag.models import small_llm_path

    path = small_llm_path()
    if path is None:
        path = in_tmp / "fake.gguf"
        path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_follow_up_carries_only_the_previous_subject_words():
    from rag.conversation import condense

    history = [("When did Hekla last erupt?", "In 2000 [1].")]
    # The follow-up's own words lead; the previous question adds only what the follow-up lacks.
    assert condense("What about its neighbour Katla?", history) == (
        "What about its neighbour Katla? (about: Hekla last erupt)"
    )
    assert condense("When did Katla last erupt?", history) == "When did Katla last erupt?"  # standalone
    assert condense("and it?", [("What is it?", "...")]) == "and it?"  # nothing to carry


def test_highlights_can_be_turned_off(make_settings, in_tmp, scripted):
    write_corpus(in_tmp / "seeds")
    plain = indexed(Rag(make_settings(chunk_tokens=24, chunk_overlap=0, generator="scripted", relevance_floor=FLOOR, prompt_highlights=False)))
    scripted.enqueue("Katla last erupted in 1918 [1].")
    plain.ask(KATLA)
    [request] = scripted.requests
    assert "Most relevant sentences" not in request.messages[1].content
    assert "Katla lies beneath the Myrdalsjokull glacier" in request.messages[1].content  # the passage itself


def test_no_more_answers_are_generated_at_once_than_max_concurrent(make_settings, in_tmp):
    import threading
    import time as clock

    write_corpus(in_tmp / "seeds")
    running, peak, lock = [0], [0], threading.Lock()

    class Slow(ScriptedGenerator):
        def stream(self, request):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            clock.sleep(0.3)
            yield "Katla last erupted in 1918 [1]."
            with lock:
                running[0] -= 1

    register_scripted(Slow(), "slow")
    try:
        r = indexed(Rag(make_settings(chunk_tokens=24, chunk_overlap=0, generator="slow", relevance_floor=FLOOR, max_concurrent=2)))
        threads = [threading.Thread(target=r.ask, args=(KATLA,)) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        unregister("slow")
    assert peak[0] == 2


def test_the_answerability_decision_refuses_without_a_model_call_and_says_why(r, scripted, make_settings):
    strict = indexed(Rag(make_settings(chunk_tokens=24, chunk_overlap=0, generator="scripted",
                                       relevance_floor=FLOOR, answerability_threshold=0.99)))
    answer = strict.ask(KATLA)
    assert answer.refused and answer.citations == []
    assert answer.fallback_reason and answer.fallback_reason.startswith("not answered:")
    assert scripted.calls == 0
    scripted.enqueue("Katla last erupted in 1918 [1].")
    assert not r.ask(KATLA).refused  # off by default: the same question is answered


def test_a_name_the_model_leaves_out_of_a_list_is_added_from_the_documents(r, scripted):
    scripted.enqueue("Vienna stands on the Danube [1].")
    answer = r.ask(DANUBE)
    assert answer.text == "Vienna stands on the Danube [1]. The documents also name: Budapest [1]."
    assert answer.fallback_reason and "left out names" in answer.fallback_reason
    [c] = answer.citations
    assert (c.source, c.start_line) == ("notes/rivers.txt", VIENNA_LINE)
    assert_grounded(answer)


def test_a_model_answer_nothing_supports_is_replaced_by_the_passages_sentences(r, scripted):
    scripted.enqueue("Penguins cannot fly [1].")
    answer = r.ask(DANUBE)
    assert answer.text == "Vienna and Budapest both stand on the Danube. [1]"
    assert "not supported by the passages" in answer.fallback_reason
    assert_grounded(answer)


def test_a_complete_model_answer_is_left_as_written(r, scripted):
    scripted.enqueue("Vienna and Budapest both stand on the Danube [1].")
    answer = r.ask(DANUBE)
    assert answer.text == "Vienna and Budapest both stand on the Danube [1]."
    assert answer.fallback_reason is None


def test_auto_context_is_windowed_for_a_local_model_and_whole_passages_for_an_endpoint(make_settings, in_tmp):
    class Local(ScriptedGenerator):
        """Stands for a model that reads slowly and can save what it read."""

        fingerprint = "local-model"

        def save_prefix(self, system, path):  # pragma: no cover - the corpus does not fit 1,024 tokens
            raise AssertionError("the corpus must not be read whole here")

        def preload(self, path):  # pragma: no cover
            raise AssertionError("no corpus state here")

        def private_copy(self):  # pragma: no cover
            raise AssertionError("no corpus state here")

        def close(self):
            pass

    write_corpus(in_tmp / "seeds")
    requests = {}
    for name, gen in (("local", Local(context_tokens=1024)), ("endpoint", ScriptedGenerator(context_tokens=1024))):
        register_scripted(gen, name)
        try:
            r = indexed(Rag(make_settings(chunk_tokens=60, chunk_overlap=0, generator=name, relevance_floor=0.0, prompt_budget_tokens=20,
                                          prompt_context="auto")))
            r.ask(KATLA)
        finally:
            unregister(name)
        requests[name] = gen.requests[0]
    local, endpoint = requests["local"], requests["endpoint"]
    assert all(p.chunk.text in CORPUS[p.chunk.source] for p in local.passages)
    assert sum(len(p.chunk.text) for p in local.passages) < sum(len(p.chunk.text) for p in endpoint.passages)
    assert "Most relevant sentences" in endpoint.messages[1].content  # the old prompt: passages + highlights
    assert "Most relevant sentences" not in local.messages[1].content  # excerpts are the best sentences
