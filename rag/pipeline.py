"""The public entry points: `Rag` (one per process), `ask()`, `ask_stream()`.

One question travels through the stages, each in a module named for its role:

    retrieve (rag.retrieval) -> select (rag.selection) -> prompt (rag.prompting)
      -> generate (rag.generation) -> assemble (rag.assembly) -> verify (rag.verification)

`Rag` only ties them together and holds what is loaded once: the index handle, the embedder and
the generators.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict, Unpack

from rag import generation, lifecycle
from rag.answerability import decide
from rag.assembly import assemble
from rag.config import Settings, load_settings
from rag.conversation import condense
from rag.corpus_cache import CorpusCache, corpus_request, vectors_path
from rag.embedding import Embedder, get_embedder
from rag.errors import IndexNotFoundError, QuestionError, RagError
from rag.excerpts import excerpts
from rag.generation import Generator
from rag.generation.deadline import DeadlineGenerator
from rag.generation.fallback import FallbackGenerator
from rag.index_handle import IndexHandle, index_status
from rag.indexer import build_index
from rag.prompting import SYSTEM_PROMPT, build_request
from rag.refusal import REFUSAL
from rag.retrieval import Retriever
from rag.selection import prime, select
from rag.streaming import AnswerStream
from rag.text import clean_question
from rag.types import Answer, Draft, GenerationRequest, Hit, IndexReport, IndexStatus, Selection, Timings
from rag.verification import verify

Turn = tuple[str, str]  # (user question, assistant answer)


class AskOptions(TypedDict, total=False):
    """The options every way of asking takes (`Rag.ask`, `Rag.ask_stream`, `ask`, `ask_stream`)."""

    generator: str | None  # a backend name, or "auto" (RAG_GENERATOR)
    top_k: int | None  # passages to retrieve (RAG_TOP_K)
    mode: str | None  # dense, bm25 or hybrid (RAG_RETRIEVAL_MODE)
    history: Sequence[Turn]  # earlier (question, answer) turns, for follow-up questions


class Rag:
    """The index, embedder and generators of one process, loaded once and reused."""

    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None) -> None:
        self.settings = settings or load_settings()
        self._embedder = embedder
        self._lock = threading.RLock()
        self._generators: dict[str, Generator] = {}
        # Answers generated at once (RAG_MAX_CONCURRENT), whoever asks: the page, the API, Python.
        self._slots = threading.BoundedSemaphore(self.settings.max_concurrent)
        self.handle = IndexHandle(self.settings, lambda: self.embedder)
        self.corpus_cache = CorpusCache(self.settings.index_dir)
        lifecycle.track(self)  # closed at exit before the models its readers use are freed

    def close(self) -> None:
        """Stop this Rag's background work (a corpus state being read is abandoned and joined);
        what it loaded is freed when the process stops (rag.lifecycle)."""
        self.corpus_cache.close()

    # -- parts ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = get_embedder(self.settings.embedding_model)
            return self._embedder

    def generator(self, name: str | None = None) -> Generator:
        resolved = generation.resolve_name(name or self.settings.generator, self.settings)
        with self._lock:
            if resolved not in self._generators:
                self._generators[resolved] = generation.create(resolved, self.settings, self.embedder)
            return self._generators[resolved]

    def warm_up(self, generator: str | None = None) -> Generator:
        """Load what the first question needs (index, embedder, generator) and let a local model
        read the fixed start of its prompt now: the saved corpus state when there is one (else
        it is started in the background), otherwise the system prompt."""
        with ThreadPoolExecutor(1, thread_name_prefix="rag-load") as pool:
            if generation.resolve_name(generator or self.settings.generator, self.settings) == "llamacpp":
                # The local model's weights load meanwhile (kept process-wide, so `generator()`
                # finds them): llama.cpp reads them without holding the interpreter lock.
                pool.submit(generation.create, "llamacpp", self.settings)
            try:
                self.retriever()
            except RagError:
                self.embedder  # no index yet: the watcher or the first question builds it
        gen = self.generator(generator)
        chunks = self.handle.chunks() if self.handle.loaded else None
        corpus = self.settings.prompt_context in ("auto", "corpus") and hasattr(gen, "save_prefix") and chunks
        build = self.handle.build if corpus else ""
        if corpus and self.corpus_cache.fits(build, chunks, gen.context_tokens, self.settings.llm_max_tokens):
            # Every sentence's vector at hand (saved once per build): selecting is a lookup.
            prime(chunks, self.embedder, vectors_path(self.settings.index_dir, build, self.embedder.model_id))
            state = self.corpus_cache.ready(build, gen.fingerprint)
            if state is not None:
                gen.preload(state)
                return gen
            self.corpus_cache.build_in_background(build, gen.fingerprint, chunks, gen.private_copy)
        if hasattr(gen, "warm"):
            gen.warm(SYSTEM_PROMPT)
        return gen

    def available_generators(self) -> list[str]:
        return generation.available(self.settings)

    # -- the index -----------------------------------------------------------------------------
    def index(self, *, force: bool = False, progress: bool = False, warn=None) -> IndexReport:
        """Incremental rebuild of the index from the seeds folder; answers switch to it at once."""
        report = build_index(self.settings, force=force, embedder=self._embedder, progress=progress, warn=warn)
        self.handle.refresh()
        return report

    def ensure_index(self, *, warn=None) -> IndexReport | None:
        """Build the index when there is none yet (the first question of a new folder); None
        when one exists. The only place an index is built without `index()` being called."""
        try:
            index_status(self.settings)
            return None
        except IndexNotFoundError:
            return self.index(warn=warn)

    def status(self) -> IndexStatus:
        return index_status(self.settings)

    def watch(self, on_report, *, on_error=None, stop_event=None) -> None:
        """Rebuild incrementally on every change in the seeds folder until stop_event is set.

        Questions asked meanwhile are answered from the previous build until the new one is in.
        """
        from rag.indexer import watch

        def reported(report: IndexReport) -> None:
            self.handle.refresh()
            on_report(report)

        watch(self.settings, reported, on_error=on_error, stop_event=stop_event, embedder=self._embedder)

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
    def check_question(self, question: str) -> str:
        if not isinstance(question, str):
            raise QuestionError("the question must be text")
        if len(question) > self.settings.max_question_chars:
            raise QuestionError(
                f"the question is {len(question):,} characters; the limit is "
                f"{self.settings.max_question_chars:,} (RAG_MAX_QUESTION_CHARS)"
            )
        cleaned = clean_question(question)
        if not cleaned:
            raise QuestionError("the question is empty; type a question about your documents")
        return cleaned

    def retrieve(self, question: str, *, top_k: int | None = None, mode: str | None = None) -> list[Hit]:
        """Retrieve stage: the passages that may answer, best first."""
        return self.retriever().search(
            question, top_k=top_k or self.settings.top_k, mode=mode or self.settings.retrieval_mode
        )

    def request_for(self, question: str, hits: list[Hit], gen: Generator,
                    selection: Selection | None = None) -> GenerationRequest:
        """Select and prompt stages: what `gen` is asked, fitted to its context window.

        The context is, by RAG_PROMPT_CONTEXT: the whole corpus already read by the model (a
        small corpus and a model that can save what it read), the best sentences with their
        neighbours (windowed), or the retrieved passages whole. `auto` picks by what reading
        costs the backend: the corpus, else windowed, for the local model; passages for an
        endpoint (which reads a thousand tokens in a blink).
        """
        selection = selection or select(question, hits, self.embedder)
        corpus = self._corpus_request(question, hits, selection.key, gen)
        if corpus is not None:
            return corpus
        passages, key, shown = hits, selection.key, self.settings.prompt_highlights
        context = self.settings.prompt_context
        if context == "auto":
            context = "windowed" if hasattr(gen, "save_prefix") else "passages"
        if context != "passages" and selection.ranked:
            budget = self.settings.prompt_budget_tokens
            passages, key = excerpts(selection, hits, budget=budget, neighbours=self.settings.prompt_window)
            shown = False  # the excerpts are the best sentences already
        return build_request(
            question,
            passages,
            context_tokens=gen.context_tokens,
            max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature,
            highlights=key,
            show_highlights=shown,
        )

    def _corpus_request(self, question: str, hits: list[Hit], key: list, gen: Generator) -> GenerationRequest | None:
        """The corpus request when its saved state is ready; else None (and the state is started
        in the background when the corpus fits)."""
        if self.settings.prompt_context not in ("auto", "corpus") or not hasattr(gen, "save_prefix"):
            return None
        chunks, build = self.handle.chunks(), self.handle.build
        if not chunks or not self.corpus_cache.fits(build, chunks, gen.context_tokens, self.settings.llm_max_tokens):
            return None
        state = self.corpus_cache.ready(build, gen.fingerprint)
        if state is None:
            self.corpus_cache.build_in_background(build, gen.fingerprint, chunks, gen.private_copy)
            return None
        return corpus_request(question, hits, key, chunks, state, max_tokens=self.settings.llm_max_tokens,
                              temperature=self.settings.llm_temperature)

    def ask(self, question: str, **options: Unpack[AskOptions]) -> Answer:
        """Answer a question from the documents, citing files and lines (options: AskOptions)."""
        return self.ask_stream(question, **options).result()

    def ask_stream(
        self,
        question: str,
        *,
        generator: str | None = None,
        top_k: int | None = None,
        mode: str | None = None,
        history: Sequence[Turn] = (),
    ) -> AnswerStream:
        """Like ask(), but iterate the returned stream for text pieces as they arrive."""
        started = time.perf_counter()
        question = self.check_question(question)
        mode = mode or self.settings.retrieval_mode
        if not self.handle.loaded:
            self.ensure_index()  # the very first question on an empty folder builds the index once
        standalone = condense(question, history) if history else question
        hits = self.retrieve(standalone, top_k=top_k, mode=mode)
        retrieved = time.perf_counter()
        draft = Draft(question=question, standalone=standalone, raw="", passages=[], hits=hits,
                      generator="", mode=mode)
        primary = self.generator(generator)
        relevant = bool(hits) and max((h.dense_score or 0.0) for h in hits) >= self.settings.relevance_floor
        selection = select(standalone, hits, self.embedder) if relevant else None
        reader = self._reader(primary) if selection is not None else None
        threshold = self.settings.answerability_threshold  # 0: off, nothing to compute per question
        verdict = decide(standalone, hits, selection, threshold) if selection and threshold > 0 and not reader else None
        if selection is None or (verdict is not None and not verdict.answerable):
            # Nothing relevant enough, or the passages do not answer: refuse without a model call.
            refusal = draft.model_copy(update={
                "raw": REFUSAL, "generator": primary.name, "notes": _why(verdict),
                "timings": Timings(retrieve=retrieved - started, total=time.perf_counter() - started),
            })
            return AnswerStream(iter([REFUSAL]), lambda _raw, _error: self._finish(refusal))
        return self._generate(draft, primary, started, retrieved, selection, reader=reader)

    def _reader(self, primary: Generator) -> Generator | None:
        """Who is asked whether the passages answer (RAG_ANSWERABILITY_READER): the answering
        model when reading costs it a few tokens (auto), the answering model whatever it is
        (model), or the local model for every backend (local); None when nobody reads."""
        how = self.settings.answerability_reader
        if how == "none" or self.settings.answerability_read_threshold <= 0:
            return None
        if how == "auto":  # only a model whose reading costs a few tokens (a paid endpoint is not asked)
            return primary if getattr(primary, "reads_cheaply", False) and hasattr(primary, "judge") else None
        if how == "local":
            try:
                primary = self.generator("llamacpp")
            except RagError:
                return None  # no local model installed: the features decide
        return primary if hasattr(primary, "judge") else None

    def _generate(self, draft: Draft, primary: Generator, started: float, retrieved: float,
                  selection: Selection, *, reader: Generator | None = None) -> AnswerStream:
        """Generate stage (primary bounded by the answer deadline, the extractive backend behind
        it), then assemble and verify when the stream ends."""
        request = self.request_for(draft.standalone, draft.hits, primary, selection)
        limit = f"{self.settings.answer_deadline:g}s (RAG_ANSWER_DEADLINE)"
        bounded = DeadlineGenerator(primary, started + self.settings.answer_deadline, label=limit)
        extractive = self.generator("extractive")
        gen = bounded if primary is extractive else FallbackGenerator(bounded, extractive)
        first_token: list[float] = []
        refused: list = []  # the verdict, when the model's reading refuses

        def pieces() -> Iterator[str]:
            with self._slots:
                if reader is not None:
                    asked = request if reader is primary else self.request_for(draft.standalone, draft.hits, reader, selection)
                    verdict = self._read(draft, reader, asked, selection)
                    if not verdict.answerable:
                        refused.append(verdict)
                        first_token.append(time.perf_counter())
                        yield REFUSAL
                        return
                for piece in gen.stream(request):
                    if not first_token:
                        first_token.append(time.perf_counter())
                    yield piece

        def finish(raw: str, error: RagError | None) -> Answer:
            done = time.perf_counter()
            notes = _why(refused[0]) if refused else [n for n in (getattr(gen, "reason", None), bounded.note) if n]
            if error is not None:
                if not raw.strip():
                    raise error
                notes.append(f"the answer is incomplete: {error}")
            return self._finish(draft.model_copy(update={
                "raw": raw,
                "passages": request.passages,
                "key": request.highlights or [],
                "generator": primary.name if refused else getattr(gen, "label", gen.name),
                "trust_markers": getattr(gen, "trusted_markers", False),
                "notes": notes,
                "timings": Timings(
                    retrieve=retrieved - started, generate=done - retrieved, total=done - started,
                    first_token=(first_token[0] - started) if first_token else None,
                ),
            }))

        sources = len({h.chunk.source for h in request.passages})
        status = f"reading {len(request.passages)} passages from {sources} file{'s' * (sources != 1)}"
        return AnswerStream(pieces(), finish, status=status)

    def _read(self, draft: Draft, reader: Generator, request: GenerationRequest, selection: Selection):
        """The answerability decision with the model's reading (one short yes/no pass; a model
        that cannot read leaves the decision to the features alone)."""
        try:
            reading = reader.judge(request)  # type: ignore[attr-defined]
        except RagError:
            reading = None
        threshold = self.settings.answerability_read_threshold if reading is not None else \
            self.settings.answerability_threshold
        return decide(draft.standalone, draft.hits, selection, threshold, reading)

    def _finish(self, draft: Draft) -> Answer:
        """Assemble and verify stages."""
        answer = assemble(draft, read_document=self.read_document, embedder=self.embedder)
        return verify(answer)


def _why(verdict) -> list[str]:
    return [f"not answered: {'; '.join(verdict.reasons)}"] if verdict is not None else []


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
