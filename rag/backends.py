"""The models of one `Rag`, each loaded once: the embedder and the generators by backend.

Also who reads for the decide stage (RAG_ANSWERABILITY_READER) and how an answer is generated:
the chosen backend bounded by the answer deadline, the fallback backend behind it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rag import generation, lifecycle
from rag.config import Settings
from rag.embedding import Embedder, get_embedder
from rag.errors import RagError
from rag.generation import abilities
from rag.generation.base import Generator, Reader
from rag.generation.deadline import DeadlineGenerator
from rag.generation.fallback import FallbackGenerator
from rag.streaming import Turns


class Backends:
    """The embedder and the generators of one `Rag`, made on first use and kept."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._generators: dict[str, Generator] = {}
        self._lock = threading.RLock()
        # Answers worked on at once: RAG_MAX_CONCURRENT by a backend that serves several (an API),
        # RAG_LLM_PARALLEL by one in this process (the local model, writing them in one batch).
        self._turns = {True: Turns(settings.max_concurrent), False: Turns(settings.llm_parallel)}
        lifecycle.track(self)

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The embedder if it is loaded already (an index build loads its own otherwise)."""
        return self._embedder

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = get_embedder(self.settings.embedding_model)
            return self._embedder

    def generator(self, name: str | None = None) -> Generator:
        """The backend `name` (default RAG_GENERATOR; `auto` resolved), made once."""
        resolved = generation.resolve_name(name or self.settings.generator, self.settings)
        with self._lock:
            if resolved not in self._generators:
                self._generators[resolved] = generation.create(resolved, self.settings, self.embedder)
            return self._generators[resolved]

    def load(self, name: str | None, also) -> Generator:
        """The generator `name`, its process-wide part (a model's weights) loading in a second
        thread while `also()` runs (the index and embedder loading)."""
        backend = generation.backend(generation.resolve_name(name or self.settings.generator, self.settings))
        with ThreadPoolExecutor(1, thread_name_prefix="rag-load") as pool:
            if backend.prepare is not None:
                pool.submit(backend.prepare, self.settings)
            also()
        return self.generator(name)

    def reader(self, primary: Generator) -> Reader | None:
        """Who is asked whether the passages answer (RAG_ANSWERABILITY_READER): the answering
        model when reading costs it a few tokens (auto), the answering model whatever it is
        (model), or the model in this process for every backend (local); None when nobody reads."""
        how = self.settings.answerability_reader
        if how == "none" or self.settings.answerability_read_threshold <= 0:
            return None
        if how == "local":
            local = generation.local_backend()
            if local is None:
                return None
            try:
                primary = self.generator(local.name)
            except RagError:
                return None  # no local model installed: the features decide
        return abilities.reader(primary, cheap_only=how == "auto")

    def turns(self, primary: Generator) -> Turns:
        """The queue answers by `primary` wait in, in order, told their place."""
        return self._turns[generation.parallel(primary.name)]

    def waiting(self, gen: object) -> int | None:
        """How many requests wait for `gen` itself (a local model's batch), when one more would."""
        return abilities.waiting(gen)

    def bounded(self, primary: Generator, deadline: float) -> "Bounded":
        """`primary` stopped at `deadline`, with the fallback backend behind it."""
        limit = f"{self.settings.answer_deadline:g}s (RAG_ANSWER_DEADLINE)"
        deadline_gen = DeadlineGenerator(primary, deadline, label=limit)
        fallback = self.generator(generation.fallback_backend().name)
        composed = None if primary is fallback else FallbackGenerator(deadline_gen, fallback)
        return Bounded(deadline_gen, composed)

    def close(self) -> None:
        """Free what the generators hold of their own (the shared model stays until exit)."""
        with self._lock:
            for gen in self._generators.values():
                abilities.close(gen)


@dataclass
class Bounded:
    """One answer's generator: the deadline around the chosen backend, the fallback around that
    (none when the chosen backend is the fallback); after streaming, who answered and why."""

    deadline: DeadlineGenerator
    fallback: FallbackGenerator | None

    @property
    def outer(self) -> Generator:
        return self.fallback or self.deadline

    @property
    def label(self) -> str:
        """Who answered, e.g. "extractive (fallback from llamacpp)"."""
        return self.fallback.label if self.fallback else self.deadline.name

    @property
    def notes(self) -> list[str]:
        """Why the fallback answered, and whether the answer was cut at the deadline."""
        return [n for n in (self.fallback.reason if self.fallback else None, self.deadline.note) if n]

    @property
    def trusted_markers(self) -> bool:
        return abilities.trusted_markers(self.outer)
