"""The Generator protocol; the request every backend receives is `rag.types.GenerationRequest`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from rag.types import GenerationRequest, Message

__all__ = ["Generator", "GenerationRequest", "Message"]


@runtime_checkable
class Generator(Protocol):
    """Writes an answer from a request, streaming text pieces as they are produced.

    A backend may also set `trusted_markers = True` when its markers are the passages' own (the
    extractive backend quotes sentences and marks each with its passage), so the assemble stage
    does not second-guess them.
    """

    name: str
    context_tokens: int  # how much prompt plus answer the backend can take

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...
