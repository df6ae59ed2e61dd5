"""The model's reading in the answerability decision: the yes/no request, the share of "yes",
the JSON verdict, the OpenAI-compatible backend's two ways of reading, and the pipeline's use of it."""

from __future__ import annotations

import json

import httpx
import pytest

from rag.answerability import combined, decide, features, score
from rag.config import load_settings
from rag.errors import ConfigError, GeneratorError, GeneratorUnavailableError
from rag.generation.openai_compat import OpenAIGenerator
from rag.judge import JUDGE_INSTRUCTION, judge_request, parse_verdict, verdict_request, yes_share
from rag.pipeline import Rag
from rag.types import GenerationRequest, Message

from fakes import CORPUS, HASHING_FLOOR, ReadingGenerator, line_of, register_scripted, standing_in, unregister, write_corpus  # noqa: F401
from test_answerability import PARAGRAPH, hit, ranked

KATLA = "When did Katla last erupt?"


def request() -> GenerationRequest:
    return GenerationRequest(
        question=KATLA, passages=[], max_tokens=200, temperature=0.1,
        messages=[Message(role="system", content="Rules."),
                  Message(role="user", content="Passage [1]: Katla erupted in 1918.\n\nQuestion: When?\nAnswer from the passages:")])


# -- the request ---------------------------------------------------------------------------------

def test_the_yes_no_request_keeps_everything_but_the_last_line():
    asked = judge_request(request())
    original = request().messages
    assert asked.messages[0] == original[0]
    head, last = asked.messages[1].content.rsplit("\n", 1)
    assert head == original[1].content.rsplit("\n", 1)[0]  # same prefix: a model reads only the new line
    assert last == JUDGE_INSTRUCTION
    assert asked.max_tokens == 1 and asked.temperature == 0.0


def test_the_verdict_request_asks_for_json():
    assert '{"answered": true}' in verdict_request(request()).messages[-1].content


# -- reading the reply ---------------------------------------------------------------------------

def test_yes_share_sums_the_spellings_of_yes_and_no():
    assert yes_share({"Yes": 0.5, " yes": 0.1, "No": 0.2, "Maybe": 0.2}) == pytest.approx(0.75)
    assert yes_share([("no", 0.4)]) == 0.0
    assert yes_share({"Maybe": 1.0}) is None


@pytest.mark.parametrize("text, value", [('{"answered": true}', 1.0), ('{"answered":false}', 0.0),
                                         ('```json\n{"Answered": True}\n```', 1.0), ("true", 1.0),
                                         ("I think so", None), ("", None)])
def test_parse_verdict(text, value):
    assert parse_verdict(text) == value


# -- the decision --------------------------------------------------------------------------------

def test_the_reading_moves_the_score_and_none_leaves_it():
    hits = [hit(PARAGRAPH)]
    selection = ranked(hits, "The Normans settled there in the 10th century.")
    base = score(features("When did the Normans settle?", hits, selection))
    assert combined(base, None) == base
    assert combined(base, 0.05) < base < combined(base, 0.95)


def test_a_model_that_says_no_refuses_with_the_reason_and_yes_answers():
    hits = [hit(PARAGRAPH)]
    selection = ranked(hits, "The Normans settled there in the 10th century.")
    no = decide("When did the Normans settle?", hits, selection, 0.5, reading=0.01)
    assert not no.answerable and no.reading == 0.01
    assert no.reasons[0].startswith("asked whether the passages state the answer, the model said no")
    assert decide("When did the Normans settle?", hits, selection, 0.5, reading=0.99).answerable


def test_reader_settings(monkeypatch):
    monkeypatch.setenv("RAG_ANSWERABILITY_READER", "none")
    monkeypatch.setenv("RAG_ANSWERABILITY_READ_THRESHOLD", "0.4")
    s = load_settings()
    assert s.answerability_reader == "none" and s.answerability_read_threshold == pytest.approx(0.4)
    monkeypatch.setenv("RAG_ANSWERABILITY_READER", "maybe")
    with pytest.raises(ConfigError, match="RAG_ANSWERABILITY_READER"):
        load_settings()


# -- the OpenAI-compatible backend -----------------------------------------------------------------

def _completion(content: str, top: dict[str, float] | None = None) -> dict:
    import math

    logprobs = None
    if top is not None:
        tops = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]
        logprobs = {"content": [{**tops[0], "top_logprobs": tops}]}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}]}


def openai_with(handler) -> tuple[OpenAIGenerator, list[dict]]:
    import openai

    seen: list[dict] = []

    def record(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        seen.append(body)
        return handler(body)

    gen = OpenAIGenerator("http://endpoint.invalid/v1", "m", retries=0)
    gen._client = openai.OpenAI(base_url="http://endpoint.invalid/v1", api_key="k", max_retries=0,
                                http_client=httpx.Client(transport=httpx.MockTransport(record)))
    return gen, seen


def test_openai_reads_yes_from_log_probabilities():
    gen, seen = openai_with(lambda body: httpx.Response(200, json=_completion("Yes", {"Yes": 0.6, "No": 0.2})))
    assert gen.judge(request()) == pytest.approx(0.75)
    assert seen[0]["max_tokens"] == 1 and seen[0]["logprobs"] is True
    assert seen[0]["messages"][-1]["content"].endswith(JUDGE_INSTRUCTION)


def test_openai_without_log_probabilities_gives_a_json_verdict_and_stops_asking_for_them():
    def handler(body):
        if body.get("logprobs"):
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return httpx.Response(200, json=_completion('{"answered": false}'))

    gen, seen = openai_with(handler)
    assert gen.judge(request()) == 0.0
    assert gen.judge(request()) == 0.0
    assert [bool(b.get("logprobs")) for b in seen] == [True, False, False]  # asked once, then remembered


def test_openai_that_ignores_logprobs_falls_back_to_the_verdict():
    gen, _ = openai_with(lambda body: httpx.Response(200, json=_completion('{"answered": true}' if not body.get("logprobs") else "Yes")))
    assert gen.judge(request()) == 1.0


def test_openai_errors_are_product_errors():
    gen, _ = openai_with(lambda body: httpx.Response(500, json={"error": {"message": "boom"}}))
    with pytest.raises(GeneratorError, match="HTTP 500"):
        gen.judge(request())


# -- the pipeline ----------------------------------------------------------------------------------

@pytest.fixture
def reading_rag(make_settings, in_tmp):
    write_corpus(in_tmp / "seeds")

    def make(*readings, **settings):
        gen = register_scripted(ReadingGenerator(*readings), "reading")
        rag = Rag(make_settings(**{"chunk_tokens": 24, "chunk_overlap": 0, "generator": "reading",
                                   "answerability_read_threshold": 0.5, "relevance_floor": HASHING_FLOOR, **settings}))
        rag.index()
        return rag, gen

    yield make
    unregister("reading")


def test_the_model_saying_no_refuses_before_it_writes(reading_rag):
    rag, gen = reading_rag(0.02)
    stream = rag.ask_stream(KATLA)
    assert stream.status  # the page shows what is happening while the model reads
    answer = stream.result()
    assert answer.refused and answer.citations == []
    assert "the model said no" in answer.fallback_reason
    assert len(gen.judged) == 1 and gen.calls == 0  # read once, never asked to answer
    assert gen.judged[0].messages[-1].content.startswith("Passage [1]")


def test_the_model_saying_yes_answers_from_the_same_request(reading_rag):
    rag, gen = reading_rag(0.97)
    gen.enqueue("Katla last erupted in 1918 [1].")
    answer = rag.ask(KATLA)
    assert not answer.refused and answer.citations[0].source == "volcanoes.txt"
    assert answer.citations[0].start_line == line_of(CORPUS["volcanoes.txt"], "Katla")
    # the yes/no request is the answer request but for its last line
    assert gen.judged[0].messages[0] == gen.requests[0].messages[0]
    assert gen.judged[0].messages[1].content.rsplit("\n", 1)[0] == gen.requests[0].messages[1].content.rsplit("\n", 1)[0]


def test_a_failed_reading_leaves_the_decision_to_the_features(reading_rag):
    rag, gen = reading_rag(GeneratorError("the endpoint answered HTTP 500"))
    gen.enqueue("Katla last erupted in 1918 [1].")
    assert not rag.ask(KATLA).refused  # the features alone, off by default


def test_by_default_only_a_model_that_reads_cheaply_is_asked(reading_rag):
    rag, gen = reading_rag(0.01)
    gen.reads_cheaply = False  # an endpoint: a reading would be one more paid request
    gen.enqueue("Katla last erupted in 1918 [1].")
    assert not rag.ask(KATLA).refused and gen.judged == []
    rag.settings = rag.settings.model_copy(update={"answerability_reader": "model"})
    assert rag.ask(KATLA).refused and len(gen.judged) == 1


@pytest.mark.parametrize("settings", [{"answerability_reader": "none"}, {"answerability_read_threshold": 0.0}])
def test_the_reading_can_be_turned_off(reading_rag, settings):
    rag, gen = reading_rag(0.01, **settings)
    gen.enqueue("Katla last erupted in 1918 [1].")
    assert not rag.ask(KATLA).refused
    assert gen.judged == []


def test_off_topic_questions_are_refused_before_any_reading(reading_rag):
    rag, gen = reading_rag(0.99)
    assert rag.ask("Quantum chromodynamics gluon confinement?").refused
    assert gen.judged == [] and gen.calls == 0


def test_the_local_model_can_read_for_another_backend(reading_rag):
    rag, gen = reading_rag(0.01, answerability_reader="local")
    plain = register_scripted(ReadingGenerator(), "plain")
    try:
        with standing_in("llamacpp", lambda settings, embedder: gen):
            rag.settings = rag.settings.model_copy(update={"generator": "plain"})
            answer = rag.ask(KATLA)
    finally:
        unregister("plain")
    assert answer.refused and "the model said no" in answer.fallback_reason
    assert len(gen.judged) == 1 and plain.judged == [] and plain.calls == 0


def test_no_local_model_means_the_features_decide(reading_rag):
    rag, gen = reading_rag(0.01, answerability_reader="local")
    gen.enqueue("Katla last erupted in 1918 [1].")

    def missing(settings, embedder):
        raise GeneratorUnavailableError("llama-cpp-python is not installed")

    with standing_in("llamacpp", missing):
        assert not rag.ask(KATLA).refused
    assert gen.judged == []
