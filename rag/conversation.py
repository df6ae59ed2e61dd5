"""The question stage: a question checked and cleaned, and a follow-up ("What about its
languages?") rewritten into a standalone question."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag.errors import QuestionError
from rag.text import STOPWORDS, clean_question

_WORDS = re.compile(r"[\w'’.-]*\w", re.UNICODE)
MAX_CONTEXT_WORDS = 8

_REFERRING = re.compile(
    r"\b(it|its|it's|they|them|their|theirs|this|that|these|those|he|him|his|she|her|hers|"
    r"the same|there|then|one|ones|what about|how about|and)\b",
    re.I,
)


def is_follow_up(question: str) -> bool:
    """Short questions or ones that point back ("its", "what about") need the conversation."""
    words = question.split()
    return bool(_REFERRING.search(question)) or len(words) <= 3


def condense(question: str, history: Sequence[tuple[str, str]]) -> str:
    """A standalone version of a follow-up: the question plus the subject of the previous turn.

    Only the previous question's content words are carried over, and not those the follow-up
    already has, so the new question's own terms still lead retrieval. Deterministic on purpose,
    so retrieval for a follow-up does not depend on which generator is selected; the rewritten
    question is shown to the user.
    """
    if not history or not is_follow_up(question):
        return question
    own = {w.lower() for w in _WORDS.findall(question)}
    carried: list[str] = []
    for word in _WORDS.findall(history[-1][0]):
        low = word.lower()
        if low in STOPWORDS or low in own or _REFERRING.fullmatch(low) or low in {w.lower() for w in carried}:
            continue
        carried.append(word)
    if not carried:
        return question
    return f"{question.rstrip()} (about: {' '.join(carried[:MAX_CONTEXT_WORDS])})"


def check_question(question: object, max_chars: int) -> str:
    """The question cleaned, or a QuestionError saying what is wrong with it."""
    if not isinstance(question, str):
        raise QuestionError("the question must be text")
    if len(question) > max_chars:
        raise QuestionError(
            f"the question is {len(question):,} characters; the limit is {max_chars:,} (RAG_MAX_QUESTION_CHARS)"
        )
    cleaned = clean_question(question)
    if not cleaned:
        raise QuestionError("the question is empty; type a question about your documents")
    return cleaned
