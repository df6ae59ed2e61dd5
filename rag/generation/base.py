"""The Generator protocol and the request every backend receives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from rag.types import Hit


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    role: str
    content: str


class GenerationRequest(BaseModel):
    """The question, the numbered passages ([1] is passages[0]) and the prompt built from them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    question: str
    passages: list[Hit]
    messages: list[Message]
    max_tokens: int = 384
    temperature: float = 0.1


@runtime_checkable
class Generator(Protocol):
    """Writes an answer from a request, streaming text pieces as they are produced."""

    name: str
    context_tokens: int  # how much prompt plus answer the backend can take

    def stream(self, request: GenerationRequest) -> Iterator[str]: ...
