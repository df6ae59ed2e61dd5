"""Answerability: each feature from hand-made passages and sentences, the score, the decision."""

from __future__ import annotations

import pytest

from rag.answerability import (
    FEATURE_NAMES,
    WEIGHTS,
    Features,
    asks_for,
    best_window,
    decide,
    features,
    score,
)
from rag.config import load_settings
from rag.errors import ConfigError
from rag.types import Chunk, Highlight, Hit, Selection


def hit(text: str, *, dense: float | None = 0.6, rank: int = 1, source: str = "a.txt") -> Hit:
    chunk = Chunk(id=f"{source}#{rank}", source=source, ordinal=rank, text=text, start_char=0,
                  end_char=len(text), start_line=1, end_line=1, tokens=len(text.split()))
    return Hit(chunk=chunk, score=1.0 / rank, dense_score=dense, rank=rank)


def ranked(hits: list[Hit], *sentences: str, score: float = 0.8, key: bool = True) -> Selection:
    """A selection ranking the given sentences (found in the hits, in that order), best first."""
    out = []
    for n, sentence in enumerate(sentences):
        marker = next(i for i, h in enumerate(hits, start=1) if sentence in h.chunk.text)
        start = hits[marker - 1].chunk.text.index(sentence)
        out.append(Highlight(marker=marker, sentence=sentence, start=start, end=start + len(sentence),
                             score=round(score - 0.1 * n, 3)))
    return Selection(ranked=out, key=out[:1] if key else [])


PARAGRAPH = ("Normandy is a region in the north of France. The Normans settled there in the 10th century. "
             "Their leader Rollo signed a treaty with the Frankish king. Many castles were built later.")


def normans(question: str, *best: str, dense: float = 0.6, key: bool = True) -> Features:
    hits = [hit(PARAGRAPH, dense=dense)]
    return features(question, hits, ranked(hits, *(best or ("The Normans settled there in the 10th century.",)),
                                           key=key))


# -- features -----------------------------------------------------------------------------------

def test_dense_top_and_gap_come_from_the_two_best_passages():
    hits = [hit("Alpha beta gamma delta.", dense=0.7), hit("Alpha beta gamma epsilon.", dense=0.5, rank=2),
            hit("Other words here now.", dense=None, rank=3)]
    f = features("alpha gamma", hits, ranked(hits, "Alpha beta gamma delta."))
    assert f.dense_top == pytest.approx(0.7)
    assert f.dense_gap == pytest.approx(0.2)


def test_sentence_score_and_selected_come_from_the_selection():
    assert normans("When did the Normans settle?").sentence_score == pytest.approx(0.8)
    assert normans("When did the Normans settle?").selected == 1.0
    assert normans("When did the Normans settle?", key=False).selected == 0.0


def test_lexical_share_weighs_rare_terms_more():
    text = "The river flows north today. The river flows past the mill. The river floods often."
    hits = [hit(text)]
    rare = features("river mill", hits, ranked(hits, "The river flows past the mill.", "The river floods often."))
    common = features("river mill", hits, ranked(hits, "The river floods often.", "The river flows past the mill."))
    assert rare.terms_sentence == common.terms_sentence * 2 == 1.0
    assert rare.sentence_lexical == pytest.approx(1.0)
    assert 0 < common.sentence_lexical < 0.5  # "river" is in every sentence: it weighs less than "mill"


def test_window_holds_the_neighbours_but_not_further_sentences():
    hits = [hit(PARAGRAPH)]
    best = Highlight(marker=1, sentence="The Normans settled there in the 10th century.",
                     start=PARAGRAPH.index("The Normans"), end=PARAGRAPH.index(" Their"), score=0.8)
    window = best_window(hits, best)
    assert window.startswith("Normandy is a region") and window.endswith("Frankish king.")
    assert "castles" not in window


def test_terms_in_the_sentence_the_window_and_the_passages():
    f = normans("Did the Normans settle with the Frankish castles?")
    # normans, settl, frankish, castl: two in the sentence, three near it, all four in the passage
    assert f.terms_sentence == pytest.approx(2 / 4)
    assert f.terms_window == pytest.approx(3 / 4)
    assert f.terms_passages == pytest.approx(1.0)
    assert f.missing == ("castles",)


def test_pointer_words_do_not_count_as_question_terms():
    with_pointer = normans("According to the article, when did the Normans settle?")
    assert with_pointer.terms_sentence == normans("When did the Normans settle?").terms_sentence == 1.0


def test_rarest_term_found_or_not():
    assert normans("When did the Normans settle?").rare_found == 1.0
    missing = normans("When did the Normans settle in Sicily?")
    assert missing.rare_found == 0.0 and missing.rarest == "Sicily"


def test_names_and_numbers_of_the_question_must_be_near_the_best_sentence():
    assert normans("What did Rollo sign?", "Their leader Rollo signed a treaty with the Frankish king.").names_window == 1.0
    assert normans("What did Rollo sign in 1066?",
                   "Their leader Rollo signed a treaty with the Frankish king.").names_window == pytest.approx(0.5)
    assert normans("What did the leader sign?", "Their leader Rollo signed a treaty with the Frankish king.").names_window == 1.0


@pytest.mark.parametrize(("question", "kind"), [
    ("When did the Normans settle?", "a date"), ("In what year did they settle?", "a date"),
    ("How many castles were built?", "a number"), ("How much land did Rollo get?", "a number"),
    ("Who led the Normans?", "a person"), ("Whose treaty was it?", "a person"),
    ("Where did the Normans settle?", "a place"), ("In what country is Normandy?", "a place"),
    ("What did Rollo sign?", None),
])
def test_the_kind_of_answer_a_question_asks_for(question, kind):
    assert asks_for(question) == kind


def test_a_date_question_needs_a_date_near_the_best_sentence():
    assert normans("When did the Normans settle?").type_missing == 0.0
    assert normans("When were many castles built?", "Many castles were built later.").type_missing == 1.0


def test_a_number_question_needs_a_number():
    hits = [hit("Many castles were built later. Twelve castles were built in stone. Castles are old.")]
    assert features("How many castles were built?", hits, ranked(hits, "Twelve castles were built in stone.")).type_missing == 0.0
    hits = [hit("Many castles were built later. Castles were built in stone. Castles are old and grey.")]
    assert features("How many castles were built?", hits, ranked(hits, "Castles are old and grey.")).type_missing == 1.0


def test_a_who_question_needs_a_name_the_question_does_not_use():
    found = normans("Who led the Normans?", "Their leader Rollo signed a treaty with the Frankish king.")
    assert found.type_missing == 0.0
    hits = [hit("Many castles were built by the Normans later. The Normans were led by the Normans.")]
    only_own = features("Who led the Normans?", hits, ranked(hits, "The Normans were led by the Normans."))
    assert only_own.type_missing == 1.0


def test_a_where_question_needs_a_place():
    assert normans("Where is Normandy?", "Normandy is a region in the north of France.").type_missing == 0.0
    hits = [hit("The castles are old. Many castles were built later on a hill. They are grey.")]
    assert features("Where were castles built?", hits, ranked(hits, "Many castles were built later on a hill.")).type_missing == 1.0


def test_negation_in_the_question_but_not_the_passage():
    never = normans("When did the Normans never settle?")
    assert never.negated == never.negation_mismatch == 1.0
    plain = normans("When did the Normans settle?")
    assert plain.negated == plain.negation_mismatch == 0.0
    hits = [hit("The Normans did not settle in Spain. They went north. They stayed.")]
    shared = features("Where did the Normans not settle?", hits, ranked(hits, "The Normans did not settle in Spain."))
    assert shared.negated == 1.0 and shared.negation_mismatch == 0.0


def test_no_sentences_give_empty_features():
    f = features("When did the Normans settle?", [hit(PARAGRAPH, dense=0.4)], Selection())
    assert f.dense_top == pytest.approx(0.4)
    assert f.terms_window == 0.0 and f.names_window == 0.0 and f.selected == 0.0
    assert features("When did the Normans settle?", [], Selection()).dense_top == 0.0


# -- score --------------------------------------------------------------------------------------

OBVIOUS = {"dense_top": 1, "sentence_score": 1, "selected": 1, "key_sentences": 1, "terms_sentence": 1,
           "terms_window": 1, "terms_passages": 1, "rare_found": 1, "names_window": 1,
           "type_missing": -1, "negated": -1, "negation_mismatch": -1}


def test_weights_match_the_features():
    assert len(WEIGHTS) == len(FEATURE_NAMES) == len(Features().vector())


@pytest.mark.parametrize("name", sorted(OBVIOUS))
def test_score_is_monotone_in_the_obvious_inputs(name):
    middle = Features(dense_top=0.5, dense_gap=0.05, sentence_score=0.5, sentence_lexical=0.5, selected=1.0,
                      terms_sentence=0.5, terms_window=0.5, terms_passages=0.5, rare_found=0.5,
                      names_window=0.5, type_missing=0.5, negated=0.5, negation_mismatch=0.5)
    low, high = middle.model_copy(update={name: 0.0}), middle.model_copy(update={name: 1.0})
    assert 0.0 <= score(low) <= 1.0 and 0.0 <= score(high) <= 1.0
    if OBVIOUS[name] > 0:
        assert score(high) >= score(low)
    else:
        assert score(high) <= score(low)


def test_a_well_matched_passage_outscores_a_near_miss():
    good = normans("When did the Normans settle?")
    near_miss = normans("When did the Vikings never settle in Sicily?", dense=0.5)
    assert score(good) > score(near_miss) + 0.2


# -- decision -----------------------------------------------------------------------------------

def test_threshold_zero_always_answers():
    verdict = decide("When did the Vikings settle in Sicily?", [], Selection(), 0.0)
    assert verdict.answerable and verdict.reasons == []


def test_a_near_miss_is_refused_with_reasons_and_a_match_is_answered():
    hits = [hit(PARAGRAPH)]
    best = ranked(hits, "The Normans settled there in the 10th century.")
    threshold = (score(features("When did the Normans settle?", hits, best))
                 + score(features("When did the Normans never settle in Sicily?", hits, best))) / 2
    assert decide("When did the Normans settle?", hits, best, threshold).answerable
    refused = decide("When did the Normans never settle in Sicily?", hits, best, threshold)
    assert not refused.answerable and 0.0 <= refused.score < threshold
    assert any("Sicily" in r for r in refused.reasons) and any("negated" in r for r in refused.reasons)


def test_reasons_name_the_missing_name_and_only_what_the_model_weighs(monkeypatch):
    import rag.answerability as answerability

    f = normans("What did Rollo sign in Sicily?", "Their leader Rollo signed a treaty with the Frankish king.")
    assert f.missing_names == ("Sicily",)
    assert "not found near the best sentence: Sicily" in answerability.reasons(f)
    weights = list(WEIGHTS)
    weights[FEATURE_NAMES.index("names_window")] = 0.0
    monkeypatch.setattr(answerability, "WEIGHTS", tuple(weights))
    assert not any("Sicily" in r and "not found" in r for r in answerability.reasons(f))


def test_a_loosely_related_passage_is_named_as_a_reason():
    from rag.answerability import reasons

    assert any("loosely related" in r for r in reasons(normans("When did the Normans settle?", dense=0.2)))
    assert not any("loosely related" in r for r in reasons(normans("When did the Normans settle?", dense=0.7)))


def test_nothing_selected_is_refused():
    verdict = decide("When did the Normans settle?", [hit(PARAGRAPH)], Selection(), 0.2)
    assert not verdict.answerable
    assert any("no sentence" in r for r in verdict.reasons)


# -- setting ------------------------------------------------------------------------------------

def test_threshold_setting(monkeypatch):
    monkeypatch.setenv("RAG_ANSWERABILITY_THRESHOLD", "0.3")
    assert load_settings().answerability_threshold == pytest.approx(0.3)
    monkeypatch.setenv("RAG_ANSWERABILITY_THRESHOLD", "1.5")
    with pytest.raises(ConfigError, match="RAG_ANSWERABILITY_THRESHOLD"):
        load_settings()
