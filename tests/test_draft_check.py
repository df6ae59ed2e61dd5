"""The check stage: a model's draft against the select stage's key sentences."""

from __future__ import annotations

import pytest

from rag.assembly import assemble
from rag.draft_check import ADDED_NOTE, QUOTED_NOTE, REPLACED_NOTE, asks_for_several, check_draft, facts
from rag.embedding import HashingEmbedder
from rag.refusal import REFUSAL
from rag.text import without_repeats
from rag.types import Chunk, Draft, Highlight, Hit

from fakes import line_of

FILES = {
    "firms.txt": (
        "Chip makers\n"
        "\n"
        "Chinese firms like Alibaba adopt AI models rapidly, driven by open-source releases.\n"
    ),
    "rivalry.txt": (
        "The rivalry\n"
        "\n"
        "American giants like Nvidia bask in the limelight.\n"
        "On the other, China\u2019s ecosystem of companies\u2014Alibaba, Tencent, Baidu, and startups\u2014are "
        "carving their own path, often in defiance of U.S. restrictions.\n"
    ),
}
QUESTION = "Which Chinese companies are named as carving their own path in defiance of U.S. restrictions?"
KEY_SENTENCE = FILES["rivalry.txt"].split("\n")[3]
KEY_LINE = line_of(FILES["rivalry.txt"], "On the other")


def hit(source: str, rank: int) -> Hit:
    text = FILES[source]
    chunk = Chunk(id=source, source=source, ordinal=0, text=text, start_char=0, end_char=len(text),
                  start_line=1, end_line=text.count("\n") + 1, tokens=len(text.split()))
    return Hit(chunk=chunk, score=1.0 / rank, dense_score=0.5, rank=rank)


PASSAGES = [hit("firms.txt", 1), hit("rivalry.txt", 2)]
START = FILES["rivalry.txt"].index(KEY_SENTENCE)
KEY = [Highlight(marker=2, sentence=KEY_SENTENCE, start=START, end=START + len(KEY_SENTENCE), score=0.9)]


def draft(raw: str, *, question: str = QUESTION, key: list[Highlight] = KEY, trust: bool = False) -> Draft:
    return Draft(question=question, standalone=question, raw=raw, passages=PASSAGES, hits=PASSAGES,
                 generator="extractive" if trust else "llamacpp", trust_markers=trust, key=key)


def answer_for(d: Draft):
    return assemble(d, read_document=FILES.get, embedder=HashingEmbedder(256))


def test_the_names_a_draft_leaves_out_are_added_with_a_citation_that_verifies():
    answer = answer_for(draft("Alibaba [1]"))
    assert answer.text == "Alibaba [1]. The documents also name: Tencent, Baidu [2]."
    assert answer.fallback_reason == ADDED_NOTE
    cited = {c.marker: c for c in answer.citations}
    assert sorted(cited) == [1, 2]
    added = cited[2]
    assert (added.source, added.start_line, added.end_line) == ("rivalry.txt", KEY_LINE, KEY_LINE)
    assert "Tencent, Baidu" in added.quote and added.verified
    assert cited[1].source == "firms.txt" and cited[1].verified


def test_a_complete_draft_is_unchanged():
    raw = "Alibaba, Tencent and Baidu are carving their own path [2]."
    answer = answer_for(draft(raw))
    assert answer.text == raw
    assert answer.fallback_reason is None
    assert [c.marker for c in answer.citations] == [2]


def test_an_unsupported_draft_is_replaced_by_the_key_sentences_visibly():
    answer = answer_for(draft("Penguins cannot fly [1]. The moon is made of green cheese [2]."))
    assert answer.text == f"{' '.join(KEY_SENTENCE.split())} [2]"
    assert answer.fallback_reason == REPLACED_NOTE
    [c] = answer.citations
    assert (c.source, c.start_line, c.verified) == ("rivalry.txt", KEY_LINE, True)


def test_one_stray_sentence_beside_supported_ones_is_kept():
    raw = "Alibaba, Tencent and Baidu are carving their own path [2]. Penguins cannot fly."
    answer = answer_for(draft(raw))
    assert answer.text == raw
    assert answer.fallback_reason is None


@pytest.mark.parametrize("raw", ["Alibaba [1]", "Penguins cannot fly [1]. The moon is made of green cheese [2]."])
def test_the_extractive_backends_own_draft_is_never_touched(raw):
    answer = answer_for(draft(raw, trust=True))
    assert answer.text == raw
    assert answer.fallback_reason is None


def test_a_refusal_is_never_touched():
    answer = answer_for(draft(REFUSAL))
    assert answer.refused and answer.text == REFUSAL
    assert answer.citations == [] and answer.fallback_reason is None


def test_without_key_sentences_the_draft_is_not_checked():
    answer = answer_for(draft("Alibaba [1]", key=[]))
    assert answer.text == "Alibaba [1]"
    assert answer.fallback_reason is None


def test_a_draft_missing_the_point_of_a_sentence_without_a_list_gets_it_quoted():
    sentence = "The chip market is dominated by Nvidia under Jensen Huang."
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    passages = [Hit(chunk=Chunk(id="c", source="chips.txt", ordinal=0, text=sentence, start_char=0,
                                end_char=len(sentence), start_line=1, end_line=1, tokens=10), score=1.0, rank=1)]
    out = check_draft("Who leads the chip market?", "The chip market is led by a company [1].", key, passages,
                      HashingEmbedder(256))
    assert out.text == ('The chip market is led by a company [1]. The documents say: '
                        '"The chip market is dominated by Nvidia under Jensen Huang" [1].')
    assert out.notes == [QUOTED_NOTE] and not out.replaced


def test_a_plural_question_answered_in_full_but_without_a_side_name_passes():
    # Nvidia is in a key sentence but not an item of the list asked for.
    sentence = "Unlike Nvidia, the firms Alibaba, Tencent and Baidu build their own chips."
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    out = check_draft("Which firms build their own chips?", "Alibaba, Tencent and Baidu [1].", key, [], None)
    assert out.text == "Alibaba, Tencent and Baidu [1]." and out.notes == []


def test_facts_are_names_not_in_the_question_and_know_list_items():
    found = facts(KEY_SENTENCE, QUESTION)
    # China is the question's "Chinese"; U.S. is in the question; "On" starts the sentence.
    assert [(f.text, f.listed) for f in found] == [("Alibaba", True), ("Tencent", True), ("Baidu", True)]
    cloud = facts("If other countries rely on Chinese cloud providers like Alibaba or Huawei Cloud, it risks "
                  "giving China access to AI training data.", "Which Chinese cloud providers are mentioned?")
    assert [(f.text, f.listed) for f in cloud] == [("Alibaba", True), ("Huawei Cloud", True), ("AI", False)]
    assert cloud[1].words == ("huawei",)  # "cloud" is the question's word
    assert [f.text for f in facts('Its variant Qwen3-Coder was released in 2025 as "coding-proficient".',
                                  "Which Qwen3 variation?")] == ["Qwen3-Coder", "2025", "coding-proficient"]


@pytest.mark.parametrize(
    "question, several",
    [
        (QUESTION, True),
        ("Which cities stand on the Danube?", True),
        ("Which companies' moat-building interests drive U.S. AI policy?", True),
        ("What are the risks of open models?", True),
        ("Name the rivers of Hungary.", True),
        ("Which OpenAI model does DeepSeek rival?", False),
        ("What does Kimi K2 specialize in?", False),
        ("Which Qwen3 variation is described as coding-proficient?", False),
        ("What is Claude AI's focus?", False),
        ("When did Katla last erupt?", False),
    ],
)
def test_asks_for_several(question, several):
    assert asks_for_several(question) is several


def test_a_draft_answering_from_another_key_sentence_passes():
    best = "Hekla is the most active volcano in southern Iceland."
    second = "It erupted in 1947 and again in the year 2000."
    key = [Highlight(marker=1, sentence=best, start=0, end=len(best), score=0.9),
           Highlight(marker=1, sentence=second, start=len(best) + 1, end=len(best) + 1 + len(second), score=0.8)]
    out = check_draft("When did Hekla erupt?", "Hekla erupted in 1947 [1].", key, [], None)
    assert out.text == "Hekla erupted in 1947 [1]." and out.notes == []


def test_a_plural_answer_complete_from_a_second_key_sentence_gets_nothing_from_the_first():
    first = "Rivers like the Rhine and the Elbe cross Germany."
    second = "Vienna and Budapest both stand on the Danube."
    key = [Highlight(marker=1, sentence=first, start=0, end=len(first), score=0.9),
           Highlight(marker=2, sentence=second, start=0, end=len(second), score=0.8)]
    out = check_draft("Which cities stand on the Danube?", "Vienna and Budapest [2].", key, [], None)
    assert out.text == "Vienna and Budapest [2]." and out.notes == []
    partial = check_draft("Which cities stand on the Danube?", "Vienna [2].", key, [], None)
    assert partial.text == "Vienna [2]. The documents also name: Budapest [2]."


def test_a_draft_naming_what_another_passage_sentence_says_passes():
    # The key sentence is about Hekla in general; the draft's year comes from the passage.
    text = "Hekla is the most active volcano in southern Iceland. It erupted in 1947 and again in 2000."
    best = text.split(". ")[0] + "."
    passages = [Hit(chunk=Chunk(id="v", source="v.txt", ordinal=0, text=text, start_char=0, end_char=len(text),
                                start_line=1, end_line=1, tokens=20), score=1.0, rank=1)]
    key = [Highlight(marker=1, sentence=best, start=0, end=len(best), score=0.9)]
    out = check_draft("When did Hekla erupt?", "Hekla erupted in 1947 [1].", key, passages, HashingEmbedder(256))
    assert out.text == "Hekla erupted in 1947 [1]." and out.notes == []
    made_up = check_draft("When did Hekla erupt?", "Hekla erupted in 1823 [1].", key, passages, HashingEmbedder(256))
    assert made_up.notes == [QUOTED_NOTE]


def test_a_draft_naming_the_wrong_thing_gets_the_key_sentence_that_answers_the_question():
    text = ("Being one of the first successful AI models, ChatGPT set the benchmarks.\n"
            "DeepSeek, for instance, rivals GPT\u2019s o1 model while being more efficient, open-source, and "
            "freely available.")
    best = text.split("\n")[1]
    passages = [Hit(chunk=Chunk(id="m", source="m.txt", ordinal=0, text=text, start_char=0, end_char=len(text),
                                start_line=1, end_line=2, tokens=30), score=1.0, rank=1)]
    key = [Highlight(marker=1, sentence=best, start=text.index(best), end=len(text), score=0.9)]
    out = check_draft("Which OpenAI model does DeepSeek rival while being more efficient?", "ChatGPT [1]", key,
                      passages, HashingEmbedder(256))
    assert out.notes == [QUOTED_NOTE]
    assert out.text == f'ChatGPT [1]. The documents say: "{best[:-1]}" [1].'


def test_one_right_name_of_a_sentence_naming_many_answers_a_question_asking_for_one():
    sentence = ("Models such as DeepSeek R1-0528, Kimi K2 and Zhipu\u2019s GLM 4.5, with Alibaba\u2019s Qwen3-Coder "
                "for code, rival OpenAI\u2019s GPT-4 and Google\u2019s Gemini.")
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    out = check_draft("Which Qwen3 variation is described as good at code?", "Qwen3-Coder [1].", key, [], None)
    assert out.text == "Qwen3-Coder [1]." and out.notes == []
    listed = [(f.text, f.listed) for f in facts(sentence, "Which Qwen3 variation?")]
    assert ("Zhipu\u2019s GLM 4.5", True) in listed and ("Google\u2019s Gemini", True) in listed
    assert ("Alibaba\u2019s Qwen3-Coder", False) in listed


def test_an_answer_in_plain_words_from_a_key_sentence_naming_others_passes():
    sentence = ("Models such as DeepSeek R1-0528, Kimi K2 (specializing in agentic reasoning) and Zhipu\u2019s GLM 4.5 "
                "rival OpenAI\u2019s GPT-4 and Google\u2019s Gemini.")
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    raw = "Kimi K2 specializes in agentic reasoning [1]."
    assert check_draft("What does Kimi K2 specialize in?", raw, key, [], None).text == raw
    missed = check_draft("What does Kimi K2 specialize in?", "Kimi K2 is fast [1].", key, [], None)
    assert missed.notes == [QUOTED_NOTE] and missed.added == [sentence]  # the sentence, not its list of names


def test_a_shared_generic_word_does_not_hold_a_name():
    sentence = "If other countries rely on Chinese cloud providers like Alibaba or Huawei Cloud, China gains data."
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    question = "Which Chinese cloud providers are mentioned?"
    out = check_draft(question, "Alibaba Cloud is mentioned [1].", key, [], None)
    assert out.text == "Alibaba Cloud is mentioned [1]. The documents also name: Huawei Cloud [1]."
    assert check_draft(question, "Alibaba and Huawei [1].", key, [], None).notes == []


def test_a_draft_missing_a_point_made_in_plain_words_gets_it_quoted():
    sentence = "With its focus on ethical practices, safety, and transparency remain at the core values of Claude AI."
    key = [Highlight(marker=1, sentence=sentence, start=0, end=len(sentence), score=0.9)]
    question = "What is Claude AI's focus according to the overview?"
    vague = "Claude AI's focus on these values makes it an ideal choice for cautious users [1]."
    out = check_draft(question, vague, key, [], None)
    assert out.notes == [QUOTED_NOTE] and out.added == [sentence]
    # Half the sentence's own words is its point, said in the draft's words.
    held = "Claude AI focuses on ethical practices, safety and transparency [1]."
    assert check_draft(question, held, key, [], None).notes == []


def test_a_models_loop_is_said_once():
    raw = ("Alibaba Cloud is mentioned [1]. Tencent is mentioned [2]. Tencent is mentioned [2]. "
           "Tencent  is MENTIONED [2].\nBaidu is mentioned [2].")
    assert without_repeats(raw) == "Alibaba Cloud is mentioned [1]. Tencent is mentioned [2].\nBaidu is mentioned [2]."
    # A sentence citing another passage is not a repeat.
    assert without_repeats("Tencent is mentioned [1]. Tencent is mentioned [2].") == (
        "Tencent is mentioned [1]. Tencent is mentioned [2].")
    answer = answer_for(draft("Alibaba, Tencent and Baidu [2]. Alibaba, Tencent and Baidu [2]."))
    assert answer.text == "Alibaba, Tencent and Baidu [2]."
    # The extractive backend's own sentences are never touched.
    assert answer_for(draft("Alibaba [1]. Alibaba [1].", trust=True)).text == "Alibaba [1]. Alibaba [1]."


def test_a_loop_whose_markers_are_corrected_onto_one_passage_is_said_once():
    # The model cites the first passage for a sentence only the second holds, twice over.
    answer = answer_for(draft("Tencent and Baidu carve their own path [1]. Tencent and Baidu carve their own path [2]."))
    assert answer.text.count("Tencent and Baidu carve their own path") == 1
