"""Follow-up questions: rewrite "What about its languages?" into a standalone question."""

from __future__ import annotations

import re
from collections.abc import Sequence

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

    Deterministic on purpose, so retrieval for a follow-up does not depend on which generator is
    selected; the rewritten question is shown to the user.
    """
    if not history or not is_follow_up(question):
        return question
    previous = history[-1][0].strip().rstrip("?")
    return f"{question.rstrip()} (about: {previous})"
