"""Metric functions on tiny hand-made cases whose answers were worked out by hand."""

from __future__ import annotations

import math

import pytest

from rag.evaluation import metrics
from rag.errors import ConfigError
from rag.evaluation.qa import Observation, floor_sweep, score, summarize, with_floor
from rag.evaluation.questions import QAItem, parse_item, sample, select, short_answers, title_half
from rag.prompting import REFUSAL

RANKED = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]


def test_distinct_keeps_first_seen_order():
    assert metrics.distinct(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("gold", "k", "expected"),
    [
        (["a.txt"], 1, 1.0),
        (["c.txt"], 1, 0.0),
        (["c.txt"], 2, 0.0),
        (["c.txt"], 3, 1.0),
        (["z.txt"], 5, 0.0),
        (["z.txt", "e.txt"], 5, 1.0),
    ],
)
def test_hit_at_k(gold, k, expected):
    assert metrics.hit_at_k(RANKED, gold, k) == expected


def test_reciprocal_rank_uses_the_first_gold_item():
    assert metrics.reciprocal_rank(RANKED, ["c.txt", "e.txt"]) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank(RANKED, ["a.txt"]) == 1.0
    assert metrics.reciprocal_rank(RANKED, ["z.txt"]) == 0.0


def test_citation_precision_and_recall():
    # cited a, b (a twice); gold a, c: one of two cited is gold, one of two gold is cited.
    assert metrics.citation_precision(["a", "b", "a"], ["a", "c"]) == 0.5
    assert metrics.citation_recall(["a", "b", "a"], ["a", "c"]) == 0.5
    # Three gold files, two cited and both gold: precision 1, recall 2/3.
    assert metrics.citation_precision(["a", "c"], ["a", "c", "d"]) == 1.0
    assert metrics.citation_recall(["a", "c"], ["a", "c", "d"]) == pytest.approx(2 / 3)
    assert metrics.citation_precision([], ["a"]) is None
    assert metrics.citation_recall([], ["a"]) == 0.0
    assert metrics.citation_recall(["a"], []) is None


def test_covers_all_needs_every_gold_item():
    assert metrics.covers_all(["a", "b", "c"], ["c", "a"]) == 1.0
    assert metrics.covers_all(["a", "b"], ["a", "c"]) == 0.0  # one of two is not enough
    assert metrics.covers_all([], ["a"]) == 0.0
    assert metrics.covers_all(["a"], []) is None


def test_normalize_answer_like_squad():
    assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.normalize_answer("An apple, a day\nkeeps THE doctor away.") == "apple day keeps doctor away"
    # "the" inside a word is not an article.
    assert metrics.normalize_answer("Theodore and Anna") == "theodore and anna"


def test_answer_contained_matches_normalised_whole_words():
    text = "The Normans settled in Normandy in the 10th century [1]."
    assert metrics.answer_contained(text, ["10th century"]) == 1.0
    assert metrics.answer_contained(text, ["in the 10th Century."]) == 1.0  # article, case, punctuation
    assert metrics.answer_contained(text, ["the Normans", "Vikings"]) == 1.0  # any gold answer
    assert metrics.answer_contained(text, ["11th century"]) == 0.0
    # Whole words: "no" is not in "Normandy"/"north", "0th" is not in "10th".
    assert metrics.answer_contained(text, ["no"]) == 0.0
    assert metrics.answer_contained(text, ["0th century"]) == 0.0
    assert metrics.answer_contained("Denmark, Iceland and Norway.", ["Denmark, Iceland and Norway"]) == 1.0
    assert metrics.answer_contained(text, []) is None
    assert metrics.answer_contained(text, ["The", "!"]) is None  # nothing left after normalising


def test_keyword_recall_counts_groups_with_any_member_case_insensitively():
    text = "Alibaba and TENCENT both build models."
    groups = [["Alibaba"], ["tencent"], ["Baidu", "Huawei"]]
    assert metrics.keyword_recall(text, groups) == pytest.approx(2 / 3)
    # One group of alternatives: any member is enough.
    assert metrics.keyword_recall("It focuses on Safety.", [["ethical", "safety", "transparency"]]) == 1.0
    assert metrics.keyword_recall("nothing here", [["a1b2"], ["c3d4"]]) == 0.0
    assert metrics.keyword_recall("anything", []) is None


def test_refusal_accuracy_and_false_refusal_rate():
    assert metrics.refusal_accuracy([True, False, True, True]) == 0.75
    assert metrics.false_refusal_rate([False, False, True, False, False]) == 0.2
    assert metrics.refusal_accuracy([]) is None


def test_percentile_interpolates_like_numpy():
    assert metrics.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


def test_lcs_length():
    assert metrics.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert metrics.lcs_length([], ["a"]) == 0


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat is on the mat" is 5 of 6 tokens each: F = 5/6.
    assert metrics.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # P = 2/4, R = 2/2: F = 2PR/(P+R) = 2/3.
    assert metrics.rouge_l("a b c d", "a c") == pytest.approx(2 / 3)
    # Case and punctuation do not count.
    assert metrics.rouge_l("The Cat!", "the cat") == 1.0
    assert metrics.rouge_l("", "the cat") == 0.0
    assert metrics.rouge_l("dog", "the cat") == 0.0
    # Several gold answers: the best one counts.
    assert metrics.rouge_l_best("a b c d", ["x y", "a c"]) == pytest.approx(2 / 3)
    assert metrics.rouge_l_best("a b", []) is None


def test_ndcg_recall_mrr_with_ranx_on_two_queries():
    qrels = {"q1": {"d1": 1, "d2": 1, "d5": 1}, "q2": {"d4": 1}}
    run = {"q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0}, "q2": {"d4": 2.0, "d9": 1.0}}
    scores = metrics.beir_scores(qrels, run)
    # q1: DCG = 1/log2(3) + 1/log2(4) = 1.13093; IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.13093;
    # nDCG = 0.53072. q2: the only relevant document first, nDCG = 1. Mean = 0.76536.
    assert scores["ndcg@10"] == pytest.approx(0.76536, abs=1e-5)
    assert scores["ndcg@10"] == pytest.approx(
        ((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)) + 1) / 2
    )
    # Recall@100: 2 of 3 and 1 of 1. MRR@10: first relevant at rank 2 and at rank 1.
    assert scores["recall@100"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["mrr@10"] == pytest.approx(0.75)


def test_beir_scores_count_a_query_with_nothing_retrieved_as_zero():
    scores = metrics.beir_scores({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}})
    assert scores["ndcg@10"] == pytest.approx(0.5)


# -- question-level scoring ------------------------------------------------------------------


def _obs(item: QAItem, text: str, retrieved, cited, refused=False, max_dense=0.5) -> Observation:
    return Observation(item, text, list(retrieved), list(cited), refused, max_dense, 1.0, "extractive")


def test_parse_item_accepts_the_clapnq_shape():
    answerable = parse_item(
        {"id": "7", "question": "q?", "answerable": True, "answers": ["x"], "gold_doc_ids": ["12_3-4"]}, "f:1"
    )
    assert answerable.sources == ["12_3-4.txt"] and answerable.answers == ["x"]
    assert not answerable.unanswerable
    unanswerable = parse_item({"question": "q?", "answerable": False, "gold_doc_ids": ["h1"]}, "f:2")
    assert unanswerable.unanswerable and unanswerable.sources == [] and unanswerable.id == "2"


def test_score_and_summarize_by_hand():
    a = QAItem(id="a", question="q", sources=["g.txt"], keywords=[["alpha"], ["beta"]], answers=["alpha beta"])
    b = QAItem(id="b", question="q", sources=["h.txt"], keywords=[["gamma"]])
    u = QAItem(id="u", question="q", unanswerable=True)
    scores = [
        # gold second among distinct files, cites gold and a wrong file, one keyword of two
        score(_obs(a, "alpha [1]", ["x.txt", "g.txt", "y.txt"], ["g.txt", "x.txt"])),
        # gold first, refused: nothing cited, no keyword
        score(_obs(b, REFUSAL, ["h.txt"], [], refused=True)),
        # unanswerable, answered: a failed refusal
        score(_obs(u, "something [1]", ["x.txt"], ["x.txt"])),
    ]
    assert scores[0].hits == {"hit@1": 0.0, "hit@3": 1.0, "hit@5": 1.0}
    assert scores[0].rouge_l == pytest.approx(2 / 3)  # "alpha" vs "alpha beta": P 1, R 1/2
    overall = summarize(scores)
    assert overall["hit@1"] == 0.5 and overall["hit@3"] == 1.0
    assert overall["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert overall["citation_precision"] == 0.5  # only the answer that cites counts
    assert overall["citation_recall"] == 0.5  # (1 + 0) / 2
    assert overall["keyword_recall"] == 0.25  # (1/2 + 0) / 2
    assert overall["refusal_accuracy"] == 0.0
    assert overall["false_refusal_rate"] == 0.5
    assert (overall["questions"], overall["answerable"], overall["unanswerable"]) == (3, 2, 1)


def test_with_floor_refuses_below_the_floor_only():
    item = QAItem(id="a", question="q", sources=["g.txt"], keywords=[["alpha"]])
    low = _obs(item, "alpha [1]", ["g.txt"], ["g.txt"], max_dense=0.2)
    high = _obs(item, "alpha [1]", ["g.txt"], ["g.txt"], max_dense=0.4)
    floored = with_floor(low, 0.3)
    assert floored.refused and floored.text == REFUSAL and floored.cited == []
    assert with_floor(high, 0.3) == high
    assert score(floored).keyword_recall == 0.0 and score(floored).hits["hit@1"] == 1.0


def test_short_answers_is_decided_by_the_median_gold_answer():
    span = QAItem(id="s", question="q", answers=["Rollo"])
    long = QAItem(id="l", question="q", answers=[" ".join(["word"] * 40)])
    assert short_answers([span]) and not short_answers([long])
    assert short_answers([span, span, long]) and not short_answers([span, long, long])
    # Unanswerable questions and questions without answers do not count.
    assert not short_answers([QAItem(id="u", question="q", unanswerable=True, answers=["x"])])
    assert not short_answers([])


def test_span_and_multi_document_scores_by_hand():
    two = QAItem(id="h1", question="q", sources=["a.txt", "b.txt"], answers=["Chief of Protocol"])
    one = QAItem(id="s1", question="q", sources=["c.txt"], answers=["Rollo", "Rollo the Viking"])
    u = QAItem(id="u", question="q", unanswerable=True)
    scores = [
        # both gold retrieved, only one cited; the answer holds the gold span
        score(_obs(two, "She served as chief of protocol [1].", ["a.txt", "x.txt", "b.txt"], ["a.txt"])),
        # both gold retrieved and cited, but the answer misses the span
        score(_obs(two, "She was an actress [1][2].", ["b.txt", "a.txt"], ["a.txt", "b.txt"])),
        # one gold document: no all-gold figures; "Rollo" is in the answer
        score(_obs(one, "The leader was Rollo [1].", ["c.txt"], ["c.txt"])),
        # refused: the span is not in the refusal
        score(_obs(one, REFUSAL, ["c.txt"], [], refused=True)),
        score(_obs(u, REFUSAL, [], [], refused=True)),
    ]
    assert [s.answer_contained for s in scores] == [1.0, 0.0, 1.0, 0.0, None]
    assert [s.all_gold_cited for s in scores] == [0.0, 1.0, None, None, None]
    assert [s.all_gold_retrieved for s in scores] == [1.0, 1.0, None, None, None]
    overall = summarize(scores)
    assert overall["answer_contained"] == 0.5  # 2 of 4 answerable
    assert overall["all_gold_cited"] == 0.5 and overall["all_gold_retrieved"] == 1.0  # of 2 with two gold
    assert overall["refusal_accuracy"] == 1.0 and overall["false_refusal_rate"] == 0.25


def test_long_answers_are_not_checked_for_containment():
    long_answer = "Magnus Carlsen became world chess champion in 2013 and defended the title in 2018 against Caruana"
    item = QAItem(id="c", question="q", sources=["c.txt"], answers=[long_answer])
    obs = _obs(item, long_answer + " [1]", ["c.txt"], ["c.txt"])
    assert score(obs).answer_contained is None and score(obs).rouge_l == 1.0
    assert score(obs, spans=True).answer_contained == 1.0
    assert summarize([score(obs)])["answer_contained"] is None
    # The floor sweep reports it for a set of short answers.
    span = QAItem(id="s", question="q", sources=["c.txt"], answers=["2013"])
    rows = floor_sweep([_obs(span, "in 2013 [1]", ["c.txt"], ["c.txt"], max_dense=0.3)], [0.2, 0.4])
    assert [r["answer_contained"] for r in rows] == [1.0, 0.0]


def test_parse_item_keeps_the_title():
    item = parse_item({"question": "q?", "answers": ["France"], "gold_doc_ids": ["sq2-0000"], "title": "Normans"}, "f:1")
    assert item.title == "Normans"
    assert parse_item({"question": "q?"}, "f:2").title is None


# -- choosing questions ------------------------------------------------------------------------


def _set(titles: list[str], per_title: int = 3) -> list[QAItem]:
    """Per title: answerable, unanswerable, answerable, ... questions with ids `<title><n>`."""
    return [
        QAItem(id=f"{t}{n}", question="q", title=t, unanswerable=n % 2 == 1)
        for t in titles for n in range(per_title)
    ]


def test_title_half_splits_titles_in_file_order():
    items = _set(["D", "A", "C", "B"], per_title=2)
    assert [i.id for i in title_half(items, "tune")] == ["D0", "D1", "A0", "A1"]
    assert [i.id for i in title_half(items, "report")] == ["C0", "C1", "B0", "B1"]
    # Titles interleaved in the file: first-seen order decides, questions stay in file order.
    mixed = [QAItem(id=str(n), question="q", title=t) for n, t in enumerate("XYXZYW")]
    assert [i.id for i in title_half(mixed, "tune")] == ["0", "1", "2", "4"]  # X, Y
    assert [i.id for i in title_half(mixed, "report")] == ["3", "5"]  # Z, W


def test_title_half_says_what_is_wrong():
    with pytest.raises(ConfigError, match="tune or report"):
        title_half(_set(["A", "B"]), "test")
    with pytest.raises(ConfigError, match="title"):
        title_half([QAItem(id="1", question="q", title="A"), QAItem(id="2", question="q")], "tune")
    with pytest.raises(ConfigError, match="two or more titles"):
        title_half(_set(["A"]), "report")


def test_sample_is_fixed_by_the_seed_and_balanced():
    items = _set([f"T{n}" for n in range(20)], per_title=4)  # 40 answerable, 40 unanswerable
    first = sample(items, 5, seed=7)
    assert [i.id for i in first] == [i.id for i in sample(items, 5, seed=7)]
    assert sum(i.unanswerable for i in first) == 5 and sum(not i.unanswerable for i in first) == 5
    assert [i.id for i in first] == [i.id for i in items if i in first]  # file order
    assert {i.id for i in sample(items, 5, seed=8)} != {i.id for i in first}
    # Not simply the first questions of the file.
    assert {i.id for i in first} != {i.id for i in select(items, answerable=5, unanswerable=5)}
    # A kind with fewer questions than asked for is taken whole.
    few = [i for i in items if not i.unanswerable] + [i for i in items if i.unanswerable][:3]
    assert sum(i.unanswerable for i in sample(few, 5, seed=7)) == 3
    with pytest.raises(ConfigError, match="--sample"):
        sample(items, -1, seed=0)


def test_select_narrows_by_titles_then_sample_then_first_n():
    items = _set([f"T{n}" for n in range(10)], per_title=4)
    report = select(items, titles="report", sample_size=3, seed=1)
    assert len(report) == 6 and {i.title for i in report} <= {f"T{n}" for n in range(5, 10)}
    assert [i.id for i in report] == [i.id for i in sample(title_half(items, "report"), 3, seed=1)]
    narrowed = select(items, titles="report", sample_size=3, seed=1, answerable=1, unanswerable=0)
    assert narrowed == [next(i for i in report if not i.unanswerable)]
    assert select(items) == items
