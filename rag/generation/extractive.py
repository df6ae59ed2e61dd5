"""No model: the answer is the passages' own sentences that best match the question, each cited."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.embedding import Embedder
from rag.refusal import REFUSAL
from rag.selection import select
from rag.types import GenerationRequest


class ExtractiveGenerator:
    """Quotes the select stage's key sentences with their markers. Instant.

    The request normally carries them already (selected once per answer); a request built without
    them is selected here.
    """

    name = "extractive"
    context_tokens = 1_000_000
    trusted_markers = True  # each marker is the quoted sentence's own passage

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder

    def compose(self, request: GenerationRequest) -> str:
        picked = request.highlights
        if picked is None:
            picked = select(request.question, request.passages, self.embedder).key
        return " ".join(f"{h.sentence} [{h.marker}]" for h in picked) if picked else REFUSAL

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", self.compose(request))
