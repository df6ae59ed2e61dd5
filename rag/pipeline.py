"""The public entry points: `Rag` (one per process), `ask()`, `ask_stream()`, index status."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from rag import generation, store
from rag.citations import attribute, build_citations, correct_markers, parse_markers
from rag.config import Settings, load_settings
from rag.conversation import condense
from rag.embedding import Embedder, canonical_model_id, get_embedder
from rag.errors import (
    GeneratorError,
    GeneratorUnavailableError,
    IndexNotFoundError,
    LoaderError,
    QuestionError,
    RagError,
)
from rag.generation import Generator
from rag.generation.base import GenerationRequest
from rag.generation.extractive import ExtractiveGenerator
from rag.indexer import build_index
from rag.prompting import REFUSAL, SYSTEM_PROMPT, build_request, is_refusal
from rag.retrieval import Retriever
from rag.text import clean_question
from rag.types import Answer, Hit, IndexReport, IndexStatus, Timings

Turn = tuple[str, str]  # (user question, assistant answer)


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


# The sentences of the prompt's rules (not its worked example, whose answer a model may rightly
# imitate, nor the refusal it is told to give), long enough not to occur in an answer by chance.
_PROMPT_SENTENCES = tuple(
    sentence
    for piece in re.split(r"(?<=[.:])\s+", re.sub(r"\n-\s*", "\n", SYSTEM_PROMPT.split("\nExample:")[0]))
    if len(sentence := _squash(piece)) >= 24 and _squash(REFUSAL) not in sentence
)


def _repeats_instructions(text: str) -> bool:
    """Whether an answer quotes the system prompt (a prompt-injection symptom)."""
    answer = _squash(text)
    return any(sentence in answer for sentence in _PROMPT_SENTENCES)


class _DeadlineReached(Exception):
    """The answer deadline passed while waiting for the backend's next piece."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _until(pieces: Iterator[str], deadline: float) -> Iterator[str]:
    """The backend's pieces, read in a worker thread so that waiting stops at the deadline.

    Checking the clock between pieces is not enough: a backend can block for minutes without
    producing one (a stalled socket, a server sending only keep-alives, retries with backoff, a
    long prompt evaluation). The worker is told to stop and closes the backend's stream at its
    next piece; a backend blocked in a read ends on its own timeout, in the background.
    """
    handoff: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def run() -> None:
        try:
            for piece in pieces:
                if cancel.is_set():
                    break
                handoff.put(piece)
        except Exception as exc:  # handed to the reader, which raises it as if it ran here
            handoff.put(_Failure(exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 (nobody is left to tell)
                    pass
            handoff.put(_DONE)

    threading.Thread(target=run, name="rag-generate", daemon=True).start()
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise _DeadlineReached
            try:
                item = handoff.get(timeout=remaining)
            except queue.Empty:
                raise _DeadlineReached from None
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        cancel.set()


class AnswerStream:
    """Iterate for text pieces as they are generated; `.answer` holds the final Answer after."""

    def __init__(self, pieces: Iterator[str], finish) -> None:
        self._pieces = pieces
        self._finish = finish
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        collected: list[str] = []
        error: RagError | None = None
        try:
            for piece in self._pieces:
                collected.append(piece)
                yield piece
        except RagError as exc:
            error = exc
        self.answer = self._finish("".join(collected), error)

    def close(self) -> None:
        """Stop early (the user pressed stop); the answer keeps what arrived."""
        close = getattr(self._pieces, "close", None)
        if close:
            close()


class Rag:
    """The index, embedder and generators of one process, loaded once and reused.

    The index is re-read when a rebuild swaps in a new build, so answers always come from one
    complete build, never a half-written one.
    """

    def __init__(self, settings: Settings | None = None, *, embedder: Embedder | None = None) -> None:
        self.settings = settings or load_settings()
        self._embedder = embedder
        self._lock = threading.RLock()
        self._loaded: tuple[str, Retriever] | None = None
        self._generators: dict[str, Generator] = {}
        self._file_cache: dict[tuple[str, float], str | None] = {}

    # -- parts ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedding_model)
        return self._embedder

    def index(self, *, force: bool = False, progress: bool = False, warn=None) -> IndexReport:
        """Incremental rebuild of the index from the seeds folder."""
        return build_index(
            self.settings, force=force, embedder=self._embedder, progress=progress, warn=warn
        )

    def status(self) -> IndexStatus:
        return index_status(self.settings)

    def retriever(self) -> Retriever:
        """The retriever over the build in use, reloading when a newer build was swapped in."""
        index_dir = self.settings.index_dir
        name = store.current_build_name(index_dir)
        if name is None:
            self.index()
            name = store.current_build_name(index_dir)
            if name is None:
                raise IndexNotFoundError(f"no index in {index_dir}; run `rag index` to build it")
        with self._lock:
            if self._loaded is None or self._loaded[0] != name:
                loaded = store.load(index_dir)
                wanted = self._embedder.model_id if self._embedder else canonical_model_id(
                    self.settings.embedding_model
                )
                store.check_compatible(
                    loaded.manifest,
                    embedding_model=wanted,
                    chunk_tokens=self.settings.chunk_tokens,
                    chunk_overlap=self.settings.chunk_overlap,
                )
                self._loaded = (loaded.name, Retriever(loaded, self.embedder))
            return self._loaded[1]

    def generator(self, name: str | None = None) -> Generator:
        resolved = generation.resolve_name(name or self.settings.generator, self.settings)
        with self._lock:
            if resolved not in self._generators:
                self._generators[resolved] = generation.create(resolved, self.settings, self.embedder)
            return self._generators[resolved]

    def available_generators(self) -> list[str]:
        return generation.available(self.settings)

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
        return self.retriever().search(
            question,
            top_k=top_k or self.settings.top_k,
            mode=mode or self.settings.retrieval_mode,
        )

    def ask(
        self,
        question: str,
        *,
        generator: str | None = None,
        top_k: int | None = None,
        mode: str | None = None,
        history: Sequence[Turn] = (),
    ) -> Answer:
        """Answer a question from the documents, citing files and lines."""
        stream = self.ask_stream(question, generator=generator, top_k=top_k, mode=mode, history=history)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer

    def request_for(self, question: str, hits: list[Hit], gen: Generator) -> GenerationRequest:
        """What `gen` is asked: the prompt over `hits`, fitted to its context window.

        A model is also shown which sentences answer best (the extractive backend's picks): small
        local models then quote the right names instead of the nearest ones.
        """
        wanted = self.settings.prompt_highlights and gen.name != ExtractiveGenerator.name
        highlights = ExtractiveGenerator(self.embedder).key_sentences(question, hits) if wanted else []
        return build_request(
            question,
            hits,
            context_tokens=gen.context_tokens,
            max_tokens=self.settings.llm_max_tokens,
            temperature=self.settings.llm_temperature,
            highlights=highlights,
        )

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
        standalone = condense(question, history) if history else question
        hits = self.retrieve(standalone, top_k=top_k, mode=mode)
        retrieved = time.perf_counter()
        relevant = bool(hits) and max((h.dense_score or 0.0) for h in hits) >= self.settings.relevance_floor

        gen = self.generator(generator)
        if not relevant:
            # Nothing relevant enough: refuse without spending a model call.
            def finish_refusal(_text: str, _error: RagError | None) -> Answer:
                return Answer(
                    question=question,
                    text=REFUSAL,
                    passages=hits,
                    refused=True,
                    generator=gen.name,
                    mode=mode,
                    standalone_question=standalone if standalone != question else None,
                    timings=Timings(retrieve=retrieved - started, total=time.perf_counter() - started),
                )

            return AnswerStream(iter([REFUSAL]), finish_refusal)

        request = self.request_for(standalone, hits, gen)
        first_token: list[float] = []
        deadline = started + self.settings.answer_deadline
        notes: list[str] = []

        def pieces() -> Iterator[str]:
            bounded = _until(gen.stream(request), deadline)
            try:
                for piece in bounded:
                    if not first_token:
                        first_token.append(time.perf_counter())
                    yield piece
            except _DeadlineReached:
                limit = f"{self.settings.answer_deadline:g}s (RAG_ANSWER_DEADLINE)"
                if not first_token:
                    # Nothing arrived in time: an error, so finish() answers extractively instead.
                    raise GeneratorError(f"{gen.name} gave no answer within {limit}") from None
                notes.append(f"the answer was cut off after {limit}")
            finally:
                bounded.close()  # stopped early (AnswerStream.close): tell the worker to stop

        def finish(raw: str, error: RagError | None) -> Answer:
            done = time.perf_counter()
            used = gen.name
            if error is not None:
                if not raw.strip():
                    if isinstance(error, (GeneratorError, GeneratorUnavailableError)) and used != "extractive":
                        # The model failed before saying anything: fall back to extractive.
                        fallback = self.generator("extractive")
                        raw = "".join(fallback.stream(request))
                        notes.append(f"{used} failed ({error}); answered extractively instead")
                        used = f"extractive (fallback from {gen.name})"
                    else:
                        raise error
                else:
                    notes.append(f"the answer is incomplete: {error}")
            return self._assemble(
                question, standalone, raw, request.passages, hits, used, mode, notes,
                Timings(
                    retrieve=retrieved - started,
                    generate=done - retrieved,
                    total=done - started,
                    first_token=(first_token[0] - started) if first_token else None,
                ),
            )

        return AnswerStream(pieces(), finish)

    def _assemble(
        self,
        question: str,
        standalone: str,
        raw: str,
        numbered: list[Hit],
        hits: list[Hit],
        used: str,
        mode: str,
        notes: list[str],
        timings: Timings,
    ) -> Answer:
        text, markers = parse_markers(raw, len(numbered))
        refused = is_refusal(text) or not text.strip()
        if not refused and _repeats_instructions(text):
            # A passage or question talked the model into reciting its instructions: withhold.
            notes.append("the answer repeated the system instructions and was withheld")
            refused = True
        if refused:
            text, markers = REFUSAL, []
        elif not markers:
            text, markers = parse_markers(attribute(text, numbered, self.embedder), len(numbered))
        elif used != "extractive":  # extractive markers are the sentences' own passages
            text, markers = parse_markers(correct_markers(text, numbered, self.embedder), len(numbered))
        citations = build_citations(text, markers, numbered, self.read_document)
        return Answer(
            question=question,
            text=text,
            citations=citations,
            passages=hits,
            refused=refused,
            generator=used,
            mode=mode,
            standalone_question=standalone if standalone != question else None,
            fallback_reason="; ".join(notes) or None,
            timings=timings,
        )

    def watch(self, on_report, *, on_error=None, stop_event=None) -> None:
        """Rebuild incrementally on every change in the seeds folder until stop_event is set.

        Questions asked meanwhile are answered from the previous build until the new one is in.
        """
        from rag.indexer import watch

        watch(self.settings, on_report, on_error=on_error, stop_event=stop_event, embedder=self._embedder)

    def document_lines(self, source: str) -> list[str] | None:
        """The lines of an indexed document (for showing a citation in context), else None."""
        text = self.read_document(source)
        return None if text is None else text.split("\n")

    # -- documents -----------------------------------------------------------------------------
    def indexed_sources(self) -> list[str]:
        return sorted(self.retriever().index.manifest.documents)

    def read_document(self, source: str) -> str | None:
        """The text of an indexed document, or None if it is not in the index or unreadable.

        Only paths the index knows are opened: a path from a client never reaches the disk as is.
        """
        try:
            known = self.retriever().index.manifest.documents
        except RagError:
            return None
        if source not in known:
            return None
        root = self.settings.seeds_dir.resolve()
        path = (root / source).resolve()
        try:
            key = (source, path.stat().st_mtime)
        except OSError:
            return None
        if key not in self._file_cache:
            from rag.loaders import document_text

            try:
                self._file_cache[key] = document_text(root, source)
            except LoaderError:
                self._file_cache[key] = None
        return self._file_cache[key]


def index_status(settings: Settings) -> IndexStatus:
    """What the manifest of the index in use says."""
    manifest = store.read_manifest(settings.index_dir)
    if manifest is None:
        raise IndexNotFoundError(f"no index in {settings.index_dir}; run `rag index` to build it")
    return IndexStatus(
        documents=len(manifest.documents),
        chunks=manifest.chunk_count,
        embedding_model=manifest.embedding_model,
        dimension=manifest.dimension,
        chunk_tokens=manifest.chunk_tokens,
        chunk_overlap=manifest.chunk_overlap,
        built_at=manifest.built_at,
        index_dir=str(settings.index_dir),
        sources=sorted(manifest.documents),
    )


_default: Rag | None = None
_default_lock = threading.Lock()


def default_rag() -> Rag:
    """The process-wide Rag built from the environment, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Rag()
        return _default


def ask(
    question: str,
    *,
    generator: str | None = None,
    top_k: int | None = None,
    mode: str | None = None,
) -> Answer:
    """Answer a question from the documents in RAG_SEEDS_DIR (building the index if needed)."""
    return default_rag().ask(question, generator=generator, top_k=top_k, mode=mode)


def ask_stream(
    question: str,
    *,
    generator: str | None = None,
    top_k: int | None = None,
    mode: str | None = None,
) -> AnswerStream:
    """Streaming ask(): iterate for text pieces; `.answer` holds the Answer afterwards."""
    return default_rag().ask_stream(question, generator=generator, top_k=top_k, mode=mode)
