"""Verify stage: the last look at an assembled answer before anyone sees it."""

from __future__ import annotations

import re

from rag.prompting import SYSTEM_PROMPT
from rag.refusal import REFUSAL
from rag.types import Answer


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


# The sentences of the prompt's rules (not its worked example, whose answer a model may rightly
# imitate, nor the refusal it is told to give), long enough not to occur in an answer by chance.
_PROMPT_SENTENCES = tuple(
    sentence
    for piece in re.split(r"(?<=[.:])\s+", re.sub(r"\n-\s*", "\n", SYSTEM_PROMPT.split("\nExample:")[0]))
    if len(sentence := _squash(piece)) >= 24 and _squash(REFUSAL) not in sentence
)


def repeats_instructions(text: str) -> bool:
    """Whether an answer quotes the system prompt (a prompt-injection symptom)."""
    answer = _squash(text)
    return any(sentence in answer for sentence in _PROMPT_SENTENCES)


def verify(answer: Answer) -> Answer:
    """The answer, or a refusal when it must be withheld (it recites the system instructions)."""
    if answer.refused or not repeats_instructions(answer.text):
        return answer
    note = "the answer repeated the system instructions and was withheld"
    reason = "; ".join(filter(None, [answer.fallback_reason, note]))
    return answer.model_copy(
        update={"text": REFUSAL, "citations": [], "refused": True, "fallback_reason": reason,
                "decided_by": "echo check"}
    )
