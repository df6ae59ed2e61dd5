"""A generator built from generators: the primary answers, or the fallback when it cannot."""

from __future__ import annotations

from collections.abc import Iterator

from rag.errors import GeneratorError, GeneratorUnavailableError
from rag.generation import abilities
from rag.generation.base import Generator
from rag.types import GenerationRequest, Note


class FallbackGenerator:
    """Streams `primary`; if it fails before saying anything, streams `fallback` instead.

    A failure after some text is not hidden: it propagates, and the answer keeps what arrived.
    After streaming, `answered_by` names who answered and `reason` says why the fallback was used
    (None when it was not). One per answer.
    """

    def __init__(self, primary: Generator, fallback: Generator) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.context_tokens = primary.context_tokens
        self.answered_by: Generator = primary
        self.reason: str | None = None

    @property
    def trusted_markers(self) -> bool:
        return abilities.trusted_markers(self.answered_by)

    @property
    def label(self) -> str:
        """Who answered, as an answer reports it."""
        if self.answered_by is self.primary:
            return self.primary.name
        return f"{self.fallback.name} (fallback from {self.primary.name})"

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        said = False
        try:
            for piece in self.primary.stream(request):
                said = said or not isinstance(piece, Note)  # a note of its place in a queue says nothing
                yield piece
            return
        except (GeneratorError, GeneratorUnavailableError) as exc:
            if said:
                raise
            self.reason = f"{self.primary.name} failed ({exc}); answered by {self.fallback.name} instead"
        self.answered_by = self.fallback
        yield from self.fallback.stream(request)
