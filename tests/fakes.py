"""Deterministic stand-ins for tests: a scripted generator and a tiny corpus with known lines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag import generation
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import RagError
from rag.generation.base import GenerationRequest


class ScriptedGenerator:
    """Replies with queued texts (or raises queued errors) and records every request it gets.

    Like llm's MockModel: `enqueue("Alice wrote it [1].")` scripts the next reply. With nothing
    queued it answers with `default`. Each reply streams word by word, so streaming is observable.
    """

    name = "scripted"

    def __init__(self, *, context_tokens: int = 8192, default: str = "Scripted answer [1].") -> None:
        self.context_tokens = context_tokens
        self.default = default
        self.requests: list[GenerationRequest] = []
        self._queue: list[str | RagError] = []

    def enqueue(self, *replies: str | RagError) -> "ScriptedGenerator":
        self._queue.extend(replies)
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self.requests.append(request)
        reply = self._queue.pop(0) if self._queue else self.default
        if isinstance(reply, RagError):
            raise reply
        start = 0
        for i, ch in enumerate(reply):
            if ch == " ":
                yield reply[start : i + 1]
                start = i + 1
        if start < len(reply):
            yield reply[start:]


class ReadingGenerator(ScriptedGenerator):
    """A ScriptedGenerator that also answers the answerability check's yes/no question
    (`judge`) with queued readings (a share of "yes", None, or an error to raise)."""

    reads_cheaply = True  # like the local model: asked by default

    def __init__(self, *readings: float | None | RagError, **options) -> None:
        super().__init__(**options)
        self.readings: list[float | None | RagError] = list(readings)
        self.judged: list[GenerationRequest] = []

    def judge(self, request: GenerationRequest) -> float | None:
        self.judged.append(request)
        reading = self.readings.pop(0) if self.readings else None
        if isinstance(reading, RagError):
            raise reading
        return reading


def register_scripted(generator: ScriptedGenerator, name: str = "scripted") -> ScriptedGenerator:
    """Register one ScriptedGenerator instance under `name` (the registry keeps factories)."""

    def factory(settings: Settings, embedder: Embedder | None) -> ScriptedGenerator:
        return generator

    generator.name = name
    generation.register(name, factory)
    return generator


def unregister(name: str) -> None:
    generation.unregister(name)


@contextmanager
def standing_in(name: str, factory) -> Iterator[None]:
    """Register `factory` under a built-in backend's name for a while, then put the built-in back."""
    saved = generation.registered(name)
    roles = dict(parallel=saved.parallel, local=saved.local, fallback=saved.fallback) if saved else {}
    generation.register(name, factory, **roles)  # the stand-in plays the built-in's roles
    try:
        yield
    finally:
        generation.unregister(name)
        if saved is not None:
            generation.register(name, saved.factory, prepare=saved.prepare, **roles)


@pytest.fixture
def scripted() -> Iterator[ScriptedGenerator]:
    """A fresh ScriptedGenerator registered as "scripted" for one test (import it to use it)."""
    generator = register_scripted(ScriptedGenerator())
    yield generator
    unregister("scripted")


# Three small documents whose facts sit on known lines (1-based), so citations can be checked.
# The relevance floor tests with the hashing embedder use: its cosine of a question and a
# sentence-sized chunk under its header clears it; an off-topic question shares no word and stays
# under (the real model's floor is 0.22).
HASHING_FLOOR = 0.08

CORPUS: dict[str, str] = {
    "volcanoes.txt": (
        "Volcanoes of Iceland\n"
        "\n"
        "Hekla is the most active volcano in southern Iceland.\n"
        "It erupted in 1947 and again in the year 2000.\n"
        "\n"
        "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918.\n"
    ),
    "bread.md": (
        "# Sourdough bread\n"
        "\n"
        "A sourdough starter needs flour and water fed every day.\n"
        "The dough rises for twelve hours before baking at 250 degrees.\n"
    ),
    "notes/rivers.txt": (
        "The Danube flows through ten countries before reaching the Black Sea.\n"
        "Vienna and Budapest both stand on the Danube.\n"
    ),
}


def write_corpus(seeds: Path, corpus: dict[str, str] | None = None) -> Path:
    for rel, text in (corpus or CORPUS).items():
        path = seeds / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return seeds


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first occurrence of needle."""
    return text[: text.index(needle)].count("\n") + 1


def check_answer_structure(answer, generator: str, corpus: dict[str, str] | None = None) -> None:
    """What must hold whatever a (small, inventive) model says: text, markers within the passages,
    every citation verified against the lines of its file, the backend named."""
    import re

    from rag.citations import MARKER
    from rag.prompting import REFUSAL

    corpus = corpus or CORPUS
    assert answer.generator == generator
    assert answer.text.strip()
    # No fallback to another backend; the only note allowed is the draft check's (a small model's
    # invented facts are replaced by, or completed from, the passages' own sentences).
    assert answer.fallback_reason is None or answer.fallback_reason.startswith("the model's answer"), answer.fallback_reason
    numbers = [int(n) for group in MARKER.findall(answer.text) for n in re.findall(r"\d+", group)]
    assert all(1 <= n <= len(answer.passages) for n in numbers), answer.text
    if answer.refused:
        assert answer.text == REFUSAL and answer.citations == []
    for c in answer.citations:
        assert 1 <= c.marker <= len(answer.passages)
        assert f"[{c.marker}]" in answer.text
        text = corpus[c.source]
        assert 1 <= c.start_line <= c.end_line <= text.count("\n") + 1
        assert c.verified
        lines = "\n".join(text.split("\n")[c.start_line - 1 : c.end_line])
        assert " ".join(c.quote.split()) in " ".join(lines.split())
