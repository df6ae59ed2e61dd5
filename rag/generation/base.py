"""What a generator is, and the optional abilities a backend may have beside it.

Every backend is a `Generator`. A backend that can do more declares it by implementing one of the
small protocols below; `rag.generation.abilities` checks them (the one place that does) and the
pipeline asks only it. A new generator gets every ability it implements, and nothing is assumed
from its name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.types import GenerationRequest, Message

__all__ = ["Generator", "GenerationRequest", "Message", "PrefixCache", "PassageCache", "Reader", "Warmable", "Closable"]


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


@runtime_checkable
class PrefixCache(Protocol):
    """Keeps what it read: a long fixed prefix (the whole corpus) is read once per index build,
    saved to a file, and reloaded for each question, which then reads only its own part. The
    context planner uses it for the corpus prompt; reading is cheap for such a model, so it is
    also given the excerpts prompt rather than whole passages."""

    fingerprint: str  # identifies the model: a state saved by another model is never loaded

    def save_prefix(self, system: str, path: Path) -> int: ...

    def preload(self, path: Path) -> None: ...

    def private_copy(self) -> "PrefixCache": ...  # a context of its own, for reading in the background

    def close(self) -> None: ...


@runtime_checkable
class PassageCache(Protocol):
    """Reads a passage alone after the system prompt and gives its state back as bytes; a request
    naming a folder of such states (`GenerationRequest.passage_states`) is started from them,
    so only the question is read (rag.passage_states)."""

    fingerprint: str

    def read_passage(self, text: str, *, background: bool = False) -> bytes: ...

    def start_passages(self) -> None: ...  # read the chat's start up to the passages, ahead of a question

    def private_copy(self) -> "PassageCache": ...

    def close(self) -> None: ...


@runtime_checkable
class Reader(Protocol):
    """Answers "do these passages state the answer?" with its share of "yes" (rag.judge), before
    it is asked to write; `reads_cheaply` when that costs it a few tokens (a model in this
    process), so it is asked by default."""

    reads_cheaply: bool

    def judge(self, request: GenerationRequest) -> float | None: ...


@runtime_checkable
class Warmable(Protocol):
    """Reads the fixed start of every prompt (the system prompt) ahead of the first question."""

    def warm(self, system: str) -> None: ...


@runtime_checkable
class Closable(Protocol):
    """Holds something to free when its owner closes."""

    def close(self) -> None: ...
