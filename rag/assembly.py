"""Assemble stage: turn a draft's `[n]` markers into verified citations and build the Answer.

Like Haystack's AnswerBuilder: one function over one typed draft. Markers out of range are
dropped; a model's answer without markers is attributed to the passages that support it; a
model's markers on a passage that does not hold the claim are re-pointed; a model's draft that
falls below the key sentences it was given is completed or replaced (rag.draft_check).

The markers are parsed once into a MarkedText that every step reads, and again only when a step
rewrote the text; how well the passages support each claim is one table for the answer, so the
passages' sentences are embedded once however many steps compare with them.
"""

from __future__ import annotations

from collections.abc import Callable

from rag.citations import Support, attribute_claims, cite, parse, repoint_markers
from rag.draft_check import check
from rag.embedding import Embedder
from rag.refusal import REFUSAL, is_refusal
from rag.text import without_repeats
from rag.types import Answer, Draft, MarkedText


def assemble(
    draft: Draft,
    *,
    read_document: Callable[[str], str | None],
    embedder: Embedder | None = None,
) -> Answer:
    """The Answer for a draft: its text with valid markers, and one verified citation each."""
    numbered = draft.passages
    support = Support.of(numbered, embedder)  # embeds nothing until a step compares

    def reparsed(text: str) -> MarkedText:
        return marked if text == marked.text else parse(text, len(numbered))

    marked = parse(draft.raw, len(numbered))
    refused = is_refusal(marked.text) or not marked.text.strip()
    if refused:
        marked = MarkedText(text=REFUSAL)
    elif not marked.markers:
        marked = reparsed(attribute_claims(marked, support))
    elif not draft.trust_markers:
        marked = reparsed(repoint_markers(marked, support))
    if not refused and not draft.trust_markers:
        # A model's loop is cut: a sentence repeated word for word (once its markers point where
        # the claim is, so "[18] says X. [19] says X." citing one passage is a repeat) is said once.
        marked = reparsed(without_repeats(marked.text))
    notes = list(draft.notes)
    decided_by = draft.decided_by or ("model" if refused else None)
    if not refused and not draft.trust_markers and draft.key:
        # A model's draft, checked against the select stage's key sentences (rag.draft_check).
        checked = check(draft.standalone, marked.text, draft.key, numbered, support)
        marked = reparsed(checked.text)
        notes += checked.notes
        decided_by = "draft check" if checked.notes else decided_by
    return Answer(
        question=draft.question,
        text=marked.text,
        citations=cite(marked, numbered, read_document),
        passages=draft.hits,
        refused=refused,
        generator=draft.generator,
        mode=draft.mode,
        standalone_question=draft.standalone if draft.standalone != draft.question else None,
        fallback_reason="; ".join(notes) or None,
        timings=draft.timings,
        decided_by=decided_by,
    )
