"""Assemble stage: turn a draft's `[n]` markers into verified citations and build the Answer.

Like Haystack's AnswerBuilder: one function over one typed draft. Markers out of range are
dropped; a model's answer without markers is attributed to the passages that support it; a
model's markers on a passage that does not hold the claim are re-pointed; a model's draft that
falls below the key sentences it was given is completed or replaced (rag.draft_check).
"""

from __future__ import annotations

from collections.abc import Callable

from rag.citations import attribute, build_citations, correct_markers, parse_markers
from rag.draft_check import check_draft
from rag.embedding import Embedder
from rag.refusal import REFUSAL, is_refusal
from rag.text import without_repeats
from rag.types import Answer, Draft


def assemble(
    draft: Draft,
    *,
    read_document: Callable[[str], str | None],
    embedder: Embedder | None = None,
) -> Answer:
    """The Answer for a draft: its text with valid markers, and one verified citation each."""
    numbered = draft.passages
    text, markers = parse_markers(draft.raw, len(numbered))
    refused = is_refusal(text) or not text.strip()
    if refused:
        text, markers = REFUSAL, []
    elif not markers:
        text, markers = parse_markers(attribute(text, numbered, embedder), len(numbered))
    elif not draft.trust_markers:
        text, markers = parse_markers(correct_markers(text, numbered, embedder), len(numbered))
    if not refused and not draft.trust_markers:
        # A model's loop is cut: a sentence repeated word for word (once its markers point where
        # the claim is, so "[18] says X. [19] says X." citing one passage is a repeat) is said once.
        once = without_repeats(text)
        if once != text:
            text, markers = parse_markers(once, len(numbered))
    notes = list(draft.notes)
    if not refused and not draft.trust_markers and draft.key:
        # A model's draft, checked against the select stage's key sentences (rag.draft_check).
        checked = check_draft(draft.standalone, text, draft.key, numbered, embedder)
        if checked.text != text:
            text, markers = parse_markers(checked.text, len(numbered))
        notes += checked.notes
    return Answer(
        question=draft.question,
        text=text,
        citations=build_citations(text, markers, numbered, read_document),
        passages=draft.hits,
        refused=refused,
        generator=draft.generator,
        mode=draft.mode,
        standalone_question=draft.standalone if draft.standalone != draft.question else None,
        fallback_reason="; ".join(notes) or None,
        timings=draft.timings,
    )
