"""The public entry points: `Rag` (one per process), `ask()`, `ask_stream()`.

One question travels through the stages, each in a module named for its role, in this order:

    retrieve (rag.retrieval) -> select (rag.selection) -> plan (rag.planning)
      -> decide (rag.answerability) -> generate (rag.generation) -> assemble (rag.assembly)
      -> verify (rag.verification)

`Rag.ask_stream` calls them and nothing else. What is loaded once lives beside it: the index
handle (rag.index_handle), the models (rag.backends), the corpus states (the context planner).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypedDict, Unpack

from rag.answerability import Verdict, relevant, verdict
from rag.assembly import assemble
from rag.backends import Backends
from rag.config import Settings, load_settings
from rag.conversation import check_question, condense
from rag.errors import RagError
from rag.generation.base import Generator, Reader
from rag.index_handle import IndexHandle, index_status
from rag.planning import ContextPlan, ContextPlanner
from rag.retrieval import Retriever
from rag.selection import select
from rag.streaming import AnswerStream, waiting_note
from rag.types import Answer, Draft, GenerationRequest, Hit, IndexReport, IndexStatus, Note, Selection, Timings
from rag.verification import verify

if TYPE_CHECKING:
    from rag.corpus_cache import CorpusCache
    from rag.embedding import Embedder

log = logging.getLogger(__name__)
Turn = tuple[str, str]  # (user question, assistant answer)


class AskOptions(TypedDict, total=False):
    """The options every way of asking takes (`Rag.ask`, `Rag.ask_stream`, `ask`, `ask_stream`)."""

    generator: str | None  # a backend name, or "auto" (RAG_GENERATOR)
    top_k: int | None  # passages to retrieve (RAG_TOP_K)
    mode: str | None  # dense, bm25 or hybrid (RAG_RETRIEVAL_MODE)
    history: Sequence[Turn]  # earlier (question, answer) turns, for follow-up questions


class Rag:
    """The index, models and corpus states of one process, loaded once; `ask` runs the stages."""

    def __init__(self, settings: Settings | None = None, *, embedder: "Embedder | None" = None) -> None:
        self._settings = settings or load_settings()
        self.backends = Backends(self.settings, embedder)
        # Answers generated at once (RAG_MAX_CONCURRENT), whoever asks: the page, the API, Python.
        self.handle = IndexHandle(self.settings, lambda: self.embedder)
        self.planner = ContextPlanner(self.settings, self.handle, lambda: self.embedder)

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        """New settings for what is asked next (the stages read them at each question)."""
        self._settings = self.backends.settings = self.planner.settings = settings

    def close(self) -> None:
        """Stop this Rag's background work (a corpus state being read is abandoned and joined)
        and free what its generators hold of their own; the shared model goes at exit."""
        self.planner.close()
        self.backends.close()

    # -- parts ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> "Embedder":
        return self.backends.embedder

    @property
    def corpus_cache(self) -> "CorpusCache":
        return self.planner.cache

    def generator(self, name: str | None = None) -> Generator:
        return self.backends.generator(name)

    def available_generators(self) -> list[str]:
        from rag import generation

        return generation.available(self.settings)

    def warm_up(self, generator: str | None = None) -> Generator:
        """Load what the first question needs (index, embedder, generator; a model's weights in
        a second thread meanwhile) and let the planner prepare the model's prompt start."""
        gen = self.backends.load(generator, self._load_index)
        self.planner.prepare(gen)
        return gen

    def _load_index(self) -> None:
        try:
            self.retriever()
        except RagError:
            self.embedder  # no index yet: the watcher or the first question builds it

    # -- the index (rag.index_handle) -----------------------------------------------------------
    def index(self, *, force: bool = False, progress: bool = False, warn=None) -> IndexReport:
        """Incremental rebuild of the index from the seeds folder; answers switch to it at once."""
        return self.handle.index(embedder=self.backends.loaded_embedder, force=force, progress=progress, warn=warn)

    def ensure_index(self, *, warn=None) -> IndexReport | None:
        """Build the index when there is none yet (the first question of a new folder); None
        when one exists. The only place an index is built without `index()` being called."""
        return self.handle.ensure(embedder=self.backends.loaded_embedder, warn=warn)

    def status(self) -> IndexStatus:
        return index_status(self.settings)

    def watch(self, on_report, *, on_error=None, stop_event=None) -> None:
        """Rebuild incrementally on every change in the seeds folder until stop_event is set;
        questions asked meanwhile are answered from the previous build until the new one is in."""
        self.handle.watch(on_report, embedder=self.backends.loaded_embedder, on_error=on_error, stop_event=stop_event)

    def retriever(self) -> Retriever:
        return self.handle.retriever()

    def indexed_sources(self) -> list[str]:
        return self.handle.sources()

    def read_document(self, source: str) -> str | None:
        return self.handle.read_document(source)

    def document_lines(self, source: str) -> list[str] | None:
        """The lines of an indexed document (for showing a citation in context), else None."""
        text = self.read_document(source)
        return None if text is None else text.split("\n")

    # -- asking --------------------------------------------------------------------------------
    def retrieve(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> list[Hit]:
        """Retrieve stage: the passages that may answer, best first."""
        return self.retriever().search(
            question, top_k=top_k or self.settings.top_k, mode=mode or self.settings.retrieval_mode
        )

    def request_for(self, question: str, hits: list[Hit], gen: Generator,
                    selection: Selection | None = None) -> GenerationRequest:
        """Select and plan stages: what `gen` is asked, fitted to its context window."""
        return self.planner.plan(question, hits, gen, selection).request

    def ask(self, question: str, **options: Unpack[AskOptions]) -> Answer:
        """Answer a question from the documents, citing files and lines (options: AskOptions)."""
        return self.ask_stream(question, **options).result()

    def ask_stream(self, question: str, *, generator: str | None = None, top_k: int | None = None,
                   mode: str | None = None, history: Sequence[Turn] = ()) -> AnswerStream:
        """Like ask(), but iterate the returned stream for text pieces as they arrive."""
        started = time.perf_counter()
        question = check_question(question, self.settings.max_question_chars)
        mode = mode or self.settings.retrieval_mode
        if not self.handle.loaded:
            self.ensure_index()  # the very first question on an empty folder builds the index once
        standalone = condense(question, history) if history else question
        hits = self.retrieve(standalone, top_k=top_k, mode=mode)
        draft = Draft(question=question, standalone=standalone, raw="", passages=[], hits=hits, generator="",
                      mode=mode, timings=Timings(retrieve=time.perf_counter() - started))
        primary = self.generator(generator)
        selection = select(standalone, hits, self.embedder) if relevant(hits, self.settings.relevance_floor) else None
        reader = self.backends.reader(primary) if selection is not None else None
        if reader is None:  # the decide stage needs no model: it runs now, before any prompt is built
            decided = verdict(standalone, hits, selection, self.settings)
            if not decided.answerable:
                return AnswerStream.refusal(lambda _raw, _error: self._refused(draft, primary, decided, started))
        assert selection is not None  # refused above when nothing was relevant
        plan = self.planner.plan(standalone, hits, primary, selection)
        run = _Run(self, draft, primary, selection, plan, reader, started)  # decide (when a model reads), generate
        return AnswerStream(run.pieces(), run.finish, status=plan.status)

    def _refused(self, draft: Draft, primary: Generator, refused: Verdict, started: float) -> Answer:
        return self._finish(draft.model_copy(update={
            "raw": "", "generator": primary.name, "notes": _why(refused), "decided_by": refused.decided_by,
            "timings": draft.timings.model_copy(update={"total": time.perf_counter() - started}),
        }))

    def _finish(self, draft: Draft) -> Answer:
        """Assemble and verify stages."""
        answer = assemble(draft, read_document=self.read_document, embedder=self.embedder)
        return verify(answer)


class _Run:
    """One answer being generated: its decision (when a model reads), the first word's time."""

    def __init__(self, rag: Rag, draft: Draft, primary: Generator, selection: Selection, plan: ContextPlan,
                 reader: Reader | None, started: float) -> None:
        self.rag, self.draft, self.primary, self.selection, self.plan = rag, draft, primary, selection, plan
        self.reader, self.started = reader, started
        self.generation = rag.backends.bounded(primary, started + rag.settings.answer_deadline)
        self.verdict: Verdict | None = None
        self.first_token: float | None = None

    @property
    def refused(self) -> bool:
        return self.verdict is not None and not self.verdict.answerable

    def pieces(self) -> Iterator[str]:
        turns = self.rag.backends.turns(self.primary)
        for ahead in turns.wait():  # more answers than are worked on at once: told its place
            yield Note(waiting_note(ahead))
        try:
            yield from self._answer()
        finally:
            turns.leave()

    def _answer(self) -> Iterator[str]:
        if self.reader is not None:
            reader, draft = self.reader, self.draft
            if (ahead := self.rag.backends.waiting(reader)) is not None:
                yield Note(waiting_note(ahead))
            asked = self.plan.request if reader is self.primary else self.rag.request_for(
                draft.standalone, draft.hits, reader, self.selection)  # type: ignore[arg-type]
            self.verdict = verdict(draft.standalone, draft.hits, self.selection, self.rag.settings,
                                   lambda: reader.judge(asked))
        if self.verdict is not None and self.refused:
            self.first_token = time.perf_counter()
            yield self.verdict.said
            return
        log.info("%s: %s", self.primary.name, self.plan.status)
        for piece in self.generation.outer.stream(self.plan.request):
            if not isinstance(piece, Note):
                self.first_token = self.first_token or time.perf_counter()
            yield piece

    def finish(self, raw: str, error: RagError | None) -> Answer:
        notes = _why(self.verdict) if self.verdict is not None and self.refused else self.generation.notes
        if error is not None:
            if not raw.strip():
                raise error
            notes.append(f"the answer is incomplete: {error}")
        done, draft, request = time.perf_counter(), self.draft, self.plan.request
        return self.rag._finish(draft.model_copy(update={
            "raw": raw, "passages": request.passages, "key": request.highlights or [],
            "generator": self.primary.name if self.refused else self.generation.label,
            "trust_markers": self.generation.trusted_markers, "notes": notes,
            "decided_by": self.verdict.decided_by if self.verdict is not None and self.refused else None,
            "timings": draft.timings.model_copy(update={
                "generate": done - self.started - draft.timings.retrieve, "total": done - self.started,
                "first_token": (self.first_token - self.started) if self.first_token else None}),
        }))


def _why(verdict: Verdict) -> list[str]:
    return [f"not answered: {'; '.join(verdict.reasons)}"] if verdict.reasons else []


_default: Rag | None = None
_default_lock = threading.Lock()


def default_rag() -> Rag:
    """The process-wide Rag built from the environment; its index is built on first use if
    there is none yet (the one place that builds without being asked: `ask()` just works)."""
    global _default
    with _default_lock:
        if _default is None:
            rag = Rag()
            rag.ensure_index()
            _default = rag
        return _default


def ask(question: str, **options: Unpack[AskOptions]) -> Answer:
    """Answer a question from the documents in RAG_SEEDS_DIR (options: AskOptions)."""
    return default_rag().ask(question, **options)


def ask_stream(question: str, **options: Unpack[AskOptions]) -> AnswerStream:
    """Streaming ask(): iterate for text pieces; `result()` gives the Answer (options: AskOptions)."""
    return default_rag().ask_stream(question, **options)
