"""Cache-augmented generation: a small corpus read by the local model once per index build.

When every chunk fits the model's context (the seeds are a few thousand tokens), the system
message carries the whole corpus, numbered, and the model's key/value state after reading it is
saved to a file named for the build and the model. Each question then appends only the retrieval
hints, the selected sentences and the question: a few dozen tokens to read instead of a thousand.

The state is computed in the background (at low priority, in a second model context, so answers
meanwhile use the windowed prompt), stored beside the index with the build id and model
fingerprint in its name (a new build or another model means another file: a stale state is never
loaded), and old states are removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from rag import lifecycle
from rag.chunking import count_tokens
from rag.generation import abilities
from rag.prompting import ANSWER_INSTRUCTION, SYSTEM_PROMPT, format_passage
from rag.types import Chunk, GenerationRequest, Highlight, Hit, Message

log = logging.getLogger(__name__)
FOLDER = "kv"
# Room left in the context after the corpus: the per-question part and the answer.
QUESTION_ROOM = 700
# What each question reads beyond the question itself (the model has read the corpus already, so
# these only point into it; every token here is read while the user waits, ~40 a second on two
# cores at the corpus's depth): the numbers of retrieval's best passages. The key sentences are
# not shown: measured on the seeds dev set (docs/BENCHMARKS.md), 48 tokens of them cost 1.5 s of
# first-token time (p50 3.9 s against 2.45 s) for the same answers once the draft check has
# completed them (it reads the key sentences from the request either way); 24 (the best sentence
# cut short) misled the model.
MAX_HINTS = 4
# The fewest tokens a numbered passage of the corpus prompt can take (its label and one token).
MIN_PASSAGE_TOKENS = 8
# tiktoken counts fewer tokens than most chat models' own tokenizers; leave a margin.
TOKENIZER_MARGIN = 1.25


def corpus_hits(chunks: list[Chunk]) -> list[Hit]:
    """The corpus as numbered passages ([n] is chunks[n - 1]), in index order."""
    return [Hit(chunk=c, score=0.0, rank=i) for i, c in enumerate(chunks, start=1)]


def corpus_system(chunks: list[Chunk]) -> str:
    """The system message of a corpus prompt: the rules, then every chunk numbered."""
    body = "\n\n".join(format_passage(h.rank, h) for h in corpus_hits(chunks))
    return f"{SYSTEM_PROMPT}\n\nThe numbered passages:\n\n{body}"


def could_fit(chunk_count: int, context_tokens: int) -> bool:
    """Whether a corpus of `chunk_count` chunks might fit the context: each numbered passage costs
    at least its label ("Passage [n] (file, line n):") and a token of text, about ten tokens."""
    return 0 < chunk_count * MIN_PASSAGE_TOKENS <= context_tokens


def fits(chunks: list[Chunk], context_tokens: int, max_tokens: int) -> bool:
    """Whether the whole corpus and a question fit the model's context."""
    if not chunks:
        return False
    needed = count_tokens(corpus_system(chunks)) * TOKENIZER_MARGIN + QUESTION_ROOM + max_tokens
    return needed <= context_tokens


def state_path(index_dir: Path, build: str, fingerprint: str) -> Path:
    return index_dir / FOLDER / f"{build}-{fingerprint}.state"


def vectors_path(index_dir: Path, build: str, embedding_model: str) -> Path:
    """Where the vectors of every sentence of this build's corpus are kept (rag.selection.prime)."""
    return index_dir / FOLDER / f"{build}-{hashlib.sha256(embedding_model.encode()).hexdigest()[:12]}.npz"


class CorpusCache:
    """The saved corpus states of one index folder; builds the missing one in the background."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        self._lock = threading.Lock()
        self._building: set[Path] = set()
        self.failed: dict[Path, str] = {}
        self._fits: tuple[tuple[str, int, int], bool] | None = None
        self._waiting: tuple[Path, list[Chunk], object] | None = None
        self._reader: tuple[object, object] | None = None  # (thread, model) of the read in progress
        self._closed = False
        lifecycle.track(self)  # a read in progress is abandoned at exit, before its model is freed

    def fits(self, build: str, chunks: list[Chunk], context_tokens: int, max_tokens: int) -> bool:
        """Whether this build's corpus fits the context (counted once per build)."""
        key = (build, context_tokens, max_tokens)
        if self._fits is None or self._fits[0] != key:
            self._fits = (key, fits(chunks, context_tokens, max_tokens))
        return self._fits[1]

    def ready(self, build: str, fingerprint: str) -> Path | None:
        """The state file for this build and model, if it has been saved."""
        path = state_path(self.index_dir, build, fingerprint)
        return path if path.is_file() else None

    def building(self) -> bool:
        with self._lock:
            return bool(self._building)

    def build_in_background(self, build: str, fingerprint: str, chunks: list[Chunk], make_model) -> bool:
        """Start computing the state of this build (once); `make_model()` returns a fresh model
        object with `save_prefix(system, path)`. False when it is ready, running or failed."""
        path = state_path(self.index_dir, build, fingerprint)
        with self._lock:
            if self._closed or path.is_file() or path in self._building or path in self.failed:
                return False
            self._building.add(path)
            if len(self._building) > 1:
                # One reader at a time (each holds a model context of its own): the newest build
                # waits for the running one; a build superseded while waiting is dropped.
                if self._waiting is not None:
                    self._building.discard(self._waiting[0])
                self._waiting = (path, chunks, make_model)
                return True
        self._start(path, chunks, make_model)
        return True

    def _start(self, path: Path, chunks: list[Chunk], make_model) -> None:
        lifecycle.start_worker(self._build, path, chunks, make_model, name="rag-corpus-state")

    def close(self) -> None:
        """Stop the read in progress (its model closed, which aborts its decode within a step),
        drop the waiting one, and wait for the reader to end."""
        with self._lock:
            self._closed = True
            if self._waiting is not None:
                self._building.discard(self._waiting[0])
            self._waiting = None
            reader = self._reader
        if reader is not None:
            thread, model = reader
            if model is not None:
                abilities.close(model)  # aborts its read within a step
            lifecycle.join(thread)  # type: ignore[arg-type]

    def build_now(self, path: Path, chunks: list[Chunk], model) -> int:
        """Compute and save the state in this thread (tests, `rag index`); returns its tokens."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = model.save_prefix(corpus_system(chunks), path)
        self._prune(keep=path)
        return tokens

    def _build(self, path: Path, chunks: list[Chunk], make_model) -> None:
        model = None
        try:
            # Loaded at normal priority (it cannot be interrupted, so shutdown waits for it).
            model = make_model()
            with self._lock:
                self._reader = (threading.current_thread(), model)
                closed = self._closed
            if closed:
                return
            lower_priority()
            tokens = self.build_now(path, chunks, model)
            log.info("corpus state saved: %s (%d tokens)", path.name, tokens)
        except Exception as exc:  # a failed state only means the windowed prompt keeps serving
            if self._closed or lifecycle.stopping():
                log.debug("corpus state not saved: stopped (%s)", exc)
            else:
                self.failed[path] = f"{type(exc).__name__}: {exc}"
                log.warning("corpus state not saved (%s); answering from the windowed prompt", exc)
        finally:
            if model is not None:
                abilities.close(model)  # its context's memory, freed now: every rebuild makes one
            with self._lock:
                self._reader = None
                self._building.discard(path)
                waiting, self._waiting = self._waiting, None
            if waiting is not None and not self._closed:
                self._start(*waiting)

    def _prune(self, keep: Path) -> None:
        """Remove states of older builds or other models, and older builds' sentence vectors
        (only the newest is ever loaded)."""
        build = keep.name[: keep.name.rindex("-") + 1]
        for old in (self.index_dir / FOLDER).glob("*"):
            if old.suffix == ".state" and old != keep or old.suffix == ".npz" and not old.name.startswith(build):
                old.unlink(missing_ok=True)


def corpus_user_message(question: str, hints: list[int]) -> str:
    """The per-question part: which passages retrieval found, and the question."""
    found = ", ".join(f"[{n}]" for n in hints[:MAX_HINTS])
    lines = [f"Passages most related to the question: {found}"] if found else []
    lines.append(f"Question: {question}")
    lines.append(ANSWER_INSTRUCTION)
    return "\n\n".join(lines[:-2] + ["\n".join(lines[-2:])])


def lower_priority() -> None:
    """Read at low priority: a question asked meanwhile (answered from the windowed prompt)
    comes first. llama.cpp's worker threads, started by this thread's first read, inherit it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
    except (AttributeError, OSError):
        pass


def overlapping(chunks: list[Chunk], passage: Chunk) -> list[int]:
    """The numbers of the corpus chunks a retrieved passage covers (one, or several it merged)."""
    return [n for n, c in enumerate(chunks, start=1)
            if c.source == passage.source and c.start_char < passage.end_char and passage.start_char < c.end_char]


def locate(chunks: list[Chunk], passage: Chunk, key: Highlight) -> Highlight | None:
    """The key sentence of `passage` marked into the corpus chunk that holds it whole."""
    start, end = passage.start_char + key.start, passage.start_char + key.end
    for n, c in enumerate(chunks, start=1):
        if c.source == passage.source and c.start_char <= start and end <= c.end_char:
            return key.model_copy(update={"marker": n, "start": start - c.start_char, "end": end - c.start_char})
    return None


def corpus_request(question: str, hits: list[Hit], key: list[Highlight], chunks: list[Chunk], state: Path,
                   *, max_tokens: int, temperature: float) -> GenerationRequest:
    """The request over the whole corpus whose system message `state` holds already read:
    markers number the corpus's chunks; retrieval's passages and the key sentences are hints."""
    hints = list(dict.fromkeys(n for h in hits for n in overlapping(chunks, h.chunk)))
    # Each key sentence re-pointed at the corpus chunk that holds it whole (retrieval may have
    # merged overlapping chunks into one passage); if one has none, the fallback selects again.
    mapped = [m for h in key if (m := locate(chunks, hits[h.marker - 1].chunk, h)) is not None]
    highlights = mapped if len(mapped) == len(key) else None
    messages = [
        Message(role="system", content=corpus_system(chunks)),
        Message(role="user", content=corpus_user_message(question, hints)),
    ]
    return GenerationRequest(question=question, passages=corpus_hits(chunks), messages=messages,
                             highlights=highlights, prefix_state=str(state), max_tokens=max_tokens,
                             temperature=temperature)
