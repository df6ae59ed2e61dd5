"""Answerability: do the retrieved passages hold the answer, or only something near it?

Read after the select stage, from what retrieval and selection already computed (no model call):
a few features, one calibrated score (a logistic model fitted by
`benchmarks/tune_answerability.py` on SQuAD 2.0's tune half and ClapNQ), and a threshold
(RAG_ANSWERABILITY_THRESHOLD). Below it the answer is a refusal. The features look for what
makes a near-miss passage a near miss: question words it lacks, the name or number the question
is about missing, a date asked for and none given, a "not" the passage does not share. Fitted,
the score leans most on how close the best passage and sentence are, then on negation and names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field

from rag.config import Settings
from rag.errors import RagError
from rag.judge import logit
from rag.refusal import REFUSAL
from rag.selection import MAX_SENTENCES, POINTER_WORDS
from rag.text import STOPWORDS, sentences, terms
from rag.types import Frozen, Highlight, Hit, Selection

# The numeric features the score reads, in the order of WEIGHTS.
FEATURE_NAMES = (
    "dense_top", "dense_gap", "sentence_score", "sentence_lexical", "selected", "key_sentences",
    "terms_sentence", "terms_window", "terms_passages", "rare_found", "names_window", "type_missing",
    "negated", "negation_mismatch",
)
# Fitted by `rag bench tune-answerability --write` (the feature score) and `rag bench tune-reading
# --write` (its combination with the model's reading), which record in the file the data each was
# fitted on and the command; see docs/BENCHMARKS.md, "Answerability". Each feature weight is held
# to its feature's obvious sign, so the shares of question words come out 0: beside the sentence
# score they add nothing, and features with no weight are not computed.
FIT_FILE = Path(__file__).parent / "data" / "answerability.json"
_FIT = json.loads(FIT_FILE.read_text(encoding="utf-8"))
WEIGHTS = tuple(float(_FIT["features"]["weights"][name]) for name in FEATURE_NAMES)
BIAS = float(_FIT["features"]["bias"])
# How the model's reading combines with the feature score: a * logit(score) + b * logit(reading) + c.
READING_WEIGHTS = tuple(float(w) for w in _FIT["reading"]["weights"])
# The thresholds chosen with them (RAG_ANSWERABILITY_READ_THRESHOLD, RAG_ANSWERABILITY_THRESHOLD).
TUNED_READ_THRESHOLD = float(_FIT["reading"]["threshold"])
TUNED_THRESHOLD = float(_FIT["features"]["threshold"])

_DATE_QUESTION = re.compile(
    r"\bwhen\b|\b(what|which) (year|century|decade|date|month|day|era|period)\b|\bhow long ago\b")
_NUMBER_QUESTION = re.compile(
    r"\bhow (many|much|long|old|far|large|big|tall|high|often|fast|deep|wide)\b"
    r"|\b(what|which) (percentage|percent|number|amount|proportion|size|population)\b")
_PERSON_QUESTION = re.compile(r"^\W*(who|whom|whose)\b|\bwhom\b")
_PLACE_QUESTION = re.compile(
    r"^\W*where\b|\b(what|which) (country|city|state|region|place|continent|town|county|province|island)\b")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(rf"\b\d{{3,4}}s?\b|\b\d+(st|nd|rd|th)\b|\b({_MONTHS})\b|\b[Cc]entur(y|ies)\b|\b(BC|BCE|AD|CE)\b")
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|"
                     r"forty|fifty|hundred|thousand|million|billion|dozen|half|several)\b", re.IGNORECASE)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'-]+")  # Qwen3, Jean-Paul, O'Neill
_PLACE = re.compile(r"\b(in|at|from|near|to|across|throughout|of)\s+(the\s+)?([A-Z][\w'-]+)")
_NEGATION = re.compile(r"n't\b|\b(not|never|no|none|nor|neither|cannot|without)\b", re.IGNORECASE)
_WORD = re.compile(r"\w+")
LOOSE = 0.4  # a best-passage similarity under this is named as a reason (it is under most answered ones)


class Features(Frozen):
    """What the decision reads: numbers in FEATURE_NAMES order, plus the words behind them."""

    dense_top: float = 0.0  # cosine similarity of the best passage to the question
    dense_gap: float = 0.0  # ... minus that of the second best
    sentence_score: float = 0.0  # the select stage's score of its best sentence
    sentence_lexical: float = 0.0  # rarity-weighted share of question terms in that sentence
    selected: float = 0.0  # 1 when the select stage kept a sentence as an answer
    key_sentences: float = 0.0  # how many it kept, over the most it keeps
    terms_sentence: float = 0.0  # share of question terms in the best sentence
    terms_window: float = 0.0  # ... in it and its neighbours
    terms_passages: float = 0.0  # ... anywhere in the retrieved passages
    rare_found: float = 0.0  # the rarest question term is in the best window
    names_window: float = 1.0  # share of the question's names and numbers in the best window
    type_missing: float = 0.0  # the question asks for a date/number/person/place; the window has none
    negated: float = 0.0  # the question says "not"/"never"
    negation_mismatch: float = 0.0  # ... and the window does not
    asks_for: str | None = None  # "a date", "a number", "a person", "a place"
    missing: tuple[str, ...] = ()  # question words not in the best window, rarest first
    missing_names: tuple[str, ...] = ()  # the question's names and numbers not in it
    rarest: str | None = None  # the question word fewest sentences share

    def vector(self) -> list[float]:
        return [float(getattr(self, name)) for name in FEATURE_NAMES]


class Verdict(Frozen):
    """Whether to answer: the score against the threshold, and why not when refused."""

    answerable: bool
    score: float
    reasons: list[str] = Field(default_factory=list)
    reading: float | None = None  # the model's share of "yes" (rag.judge), when it was asked
    decided_by: Literal["relevance floor", "features", "reading"] | None = None  # None: nothing checked

    @property
    def said(self) -> str:
        """What the user is told when this verdict refuses."""
        return REFUSAL


def _question_words(question: str) -> dict[str, str]:
    """Stemmed content term -> the question's own word for it (pointer words left out)."""
    out: dict[str, str] = {}
    for word in _WORD.findall(question):
        for term in terms(word):
            if term not in POINTER_WORDS:
                out.setdefault(term, word)
    if not out:  # a question made only of pointer words still has terms
        out = {t: t for t in terms(question)}
    return out


def _names(question: str) -> dict[str, str]:
    """Stemmed name (a capitalised word after the first) or number of the question -> its word."""
    words = [m.group() for m in _NAME.finditer(question)] + re.findall(r"\w*\d\w*", question)
    return {t: w for w in words if w.lower() not in STOPWORDS for t in terms(w)}


def best_window(hits: list[Hit], best: Highlight) -> str:
    """The best sentence with the sentences either side of it in its passage."""
    text = hits[best.marker - 1].chunk.text
    spans = sentences(text)
    at = next((i for i, (s, e) in enumerate(spans) if s <= best.start < e), None)
    if at is None:
        return best.sentence
    return text[spans[max(at - 1, 0)][0]: spans[min(at + 1, len(spans) - 1)][1]]


def asks_for(question: str) -> str | None:
    """The kind of answer the question's wording asks for, if it names one."""
    lowered = question.lower()
    for kind, pattern in (("a number", _NUMBER_QUESTION), ("a date", _DATE_QUESTION),
                          ("a person", _PERSON_QUESTION), ("a place", _PLACE_QUESTION)):
        if pattern.search(lowered):
            return kind
    return None


def has_kind(kind: str | None, window: str, question: str) -> bool:
    """Whether the window holds an answer of that kind (a name or place the question does not use)."""
    if kind is None:
        return True
    if kind == "a date":
        return bool(_DATE.search(window))
    if kind == "a number":
        return bool(_NUMBER.search(window))
    known = {w.lower() for w in _WORD.findall(question)} | STOPWORDS
    if kind == "a person":
        return any(m.group().lower() not in known for m in _NAME.finditer(window))
    return any(m.group(3).lower() not in known for m in _PLACE.finditer(window))


def _lexical(q_terms: set[str], ranked: list[Highlight]) -> tuple[float, dict[str, int]]:
    """The best sentence's rarity-weighted term share, as the select stage weighs it, and each
    question term's sentence count."""
    pool = [set(terms(h.sentence)) for h in ranked]
    freq = {t: sum(t in ts for ts in pool) for t in q_terms}
    weight = {t: math.log(1 + len(pool) / (1 + freq[t])) for t in q_terms}
    total = sum(weight.values()) or 1.0
    return sum(weight[t] for t in pool[0] & q_terms) / total, freq


def weighted() -> frozenset[str]:
    """The features the fitted score weighs (the others are not computed when deciding)."""
    return frozenset(name for name, w in zip(FEATURE_NAMES, WEIGHTS) if w != 0)


def features(question: str, hits: list[Hit], selection: Selection,
             needed: frozenset[str] | None = None) -> Features:
    """The answerability features of one question's retrieved passages and ranked sentences:
    every one (fitting), or only those `needed` (deciding: the weighted ones)."""
    need = frozenset(FEATURE_NAMES) if needed is None else needed
    dense = sorted((h.dense_score for h in hits if h.dense_score is not None), reverse=True)
    top = {"dense_top": dense[0] if dense else 0.0,
           "dense_gap": dense[0] - dense[1] if len(dense) > 1 else 0.0}
    words = _question_words(question)
    negated = _NEGATION.search(question) is not None
    if not selection.ranked or not words:
        return Features(**top, names_window=0.0, negated=float(negated), missing=tuple(words.values()))
    best = selection.ranked[0]
    q_terms = set(words)
    window = best_window(hits, best)
    in_window = set(terms(window))
    names = _names(question)
    kind = asks_for(question)
    values: dict[str, object] = dict(
        **top,
        sentence_score=best.score,
        selected=1.0 if selection.key else 0.0,
        key_sentences=len(selection.key) / MAX_SENTENCES,
        names_window=len(names.keys() & in_window) / len(names) if names else 1.0,
        type_missing=0.0 if has_kind(kind, window, question) else 1.0,
        negated=1.0 if negated else 0.0,
        negation_mismatch=1.0 if negated and not _NEGATION.search(window) else 0.0,
        asks_for=kind,
        missing_names=tuple(dict.fromkeys(w for t, w in names.items() if t not in in_window)),
    )
    if need & {"sentence_lexical", "rare_found", "terms_window"}:  # what needs each term's sentence count
        lexical, freq = _lexical(q_terms, selection.ranked)
        rarest = min(sorted(q_terms), key=lambda t: freq[t])
        values.update(sentence_lexical=lexical, rare_found=1.0 if rarest in in_window else 0.0, rarest=words[rarest],
                      terms_window=len(q_terms & in_window) / len(q_terms),
                      missing=tuple(words[t] for t in sorted(q_terms - in_window, key=lambda t: freq[t])))
    if "terms_sentence" in need:
        values["terms_sentence"] = len(q_terms & set(terms(best.sentence))) / len(q_terms)
    if "terms_passages" in need:
        in_passages = set().union(*(terms(h.chunk.text) for h in hits))
        values["terms_passages"] = len(q_terms & in_passages) / len(q_terms)
    return Features(**values)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def score(f: Features) -> float:
    """The chance the passages hold the answer, in [0, 1] (the fitted logistic model)."""
    z = BIAS + sum(w * x for w, x in zip(WEIGHTS, f.vector()))
    return _sigmoid(z)


def reasons(f: Features) -> list[str]:
    """Plain-words explanations of what lowered the score (only what the fitted model weighs)."""
    weight = dict(zip(FEATURE_NAMES, WEIGHTS))
    found = [
        ("dense_top", f.dense_top < LOOSE,
         f"the best passage is only loosely related to the question (similarity {f.dense_top:.2f})"),
        ("selected", not f.selected, "no sentence of the passages matches the question well"),
        ("names_window", f.names_window < 1.0,
         "not found near the best sentence: " + (", ".join(f.missing_names) or "the question's names")),
        ("terms_window", f.terms_window < 1.0, "question words missing near the best sentence: " + ", ".join(f.missing[:5])),
        ("rare_found", bool(f.rarest) and not f.rare_found, f"the best sentence and its neighbours do not mention {f.rarest!r}"),
        ("type_missing", bool(f.type_missing), f"the question asks for {f.asks_for}; none is near the best sentence"),
        ("negation_mismatch", bool(f.negation_mismatch), "the question is negated; the sentences near the best one are not"),
        ("negated", bool(f.negated) and not f.negation_mismatch,
         "the question is negated, and passages seldom answer what did not happen"),
    ]
    return [text for name, lowered, text in found if lowered and weight[name] != 0]


def combined(feature_score: float, reading: float | None) -> float:
    """The score with the model's reading (its share of "yes") folded in: a logistic model over
    both, fitted by benchmarks/tune_reading.py; the feature score alone when there is no reading."""
    if reading is None:
        return feature_score
    a, b, c = READING_WEIGHTS
    z = a * logit(feature_score) + b * logit(reading) + c
    return _sigmoid(z)


def decide(question: str, hits: list[Hit], selection: Selection, threshold: float,
           reading: float | None = None) -> Verdict:
    """Answer when the score reaches the threshold (0 always answers); else refuse, with reasons."""
    f = features(question, hits, selection, weighted())
    value = round(combined(score(f), reading), 4)
    by = "features" if reading is None else "reading"
    if value >= threshold:
        return Verdict(answerable=True, score=value, reading=reading, decided_by=by)
    why = reasons(f)
    if reading is not None and reading < 0.5:
        why.insert(0, f"asked whether the passages state the answer, the model said no ({reading:.0%} yes)")
    return Verdict(answerable=False, score=value, reading=reading, decided_by=by,
                   reasons=why or ["the passages match the question too loosely"])


def relevant(hits: list[Hit], floor: float) -> bool:
    """Whether the best passage is close enough to the question to read on (RAG_RELEVANCE_FLOOR)."""
    return bool(hits) and max((h.dense_score or 0.0) for h in hits) >= floor


def verdict(question: str, hits: list[Hit], selection: Selection | None, settings: Settings,
            read: Callable[[], float | None] | None = None) -> Verdict:
    """The decide stage, once per question: nothing relevant (`selection` None) refuses; else the
    feature score, with the model's reading when `read` is given (one short pass; a model that
    cannot read leaves the decision to the features), against its threshold (0: always answer)."""
    if selection is None:
        return Verdict(answerable=False, score=0.0, decided_by="relevance floor")
    try:
        reading = read() if read is not None else None
    except RagError:
        reading = None
    threshold = settings.answerability_read_threshold if reading is not None else settings.answerability_threshold
    if threshold <= 0:
        return Verdict(answerable=True, score=1.0, reading=reading)
    return decide(question, hits, selection, threshold, reading)
