"""Passage states: each passage read once by the local model, its key/value state kept on disk.

A folder many times the model's context cannot be read whole (rag.corpus_cache), but each of its
passages can be read once, alone after the system prompt, and its state saved. A question then
starts from the system prompt with its best passages' states put one after the other, their
positions moved into place and their numbers re-read (llama.cpp's sequence calls, see
rag.generation.llama_engine): the model reads only the question, not the passages. Each passage
attended only to the system prompt when it was read, not to the passages beside it in this
prompt; docs/BENCHMARKS.md measures what that costs in answers.

States are named by what they hold (the model, the system prompt, the passage's label and text),
not by the index build: an upload, edit or removal leaves every other passage's state valid, so
only the passages it touched are read again. They are read in the background (one reader, in a
model context of its own, newest documents first, waiting while an answer is being written) and
bounded on disk (RAG_PASSAGE_STATES_MB, least recently used removed first).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rag import lifecycle
from rag.chunking import count_tokens
from rag.corpus_cache import FOLDER, corpus_system, locate, lower_priority, overlapping
from rag.generation import abilities
from rag.prompting import ANSWER_INSTRUCTION, SYSTEM_PROMPT, format_passage
from rag.types import Chunk, GenerationRequest, Highlight, Hit, Message

log = logging.getLogger(__name__)
SUBFOLDER = "passages"
# The system message's start; each passage follows it as `block_text`.
HEADER = corpus_system([])
SUFFIX = ".kv"


def block_text(number: int, chunk: Chunk) -> str:
    """One passage of the system message as the model reads it: label, text, blank line."""
    return format_passage(number, Hit(chunk=chunk, score=0.0, rank=number)) + "\n\n"


def system_message(chunks: list[Chunk]) -> str:
    """The system message of a request over `chunks`, numbered from 1."""
    return HEADER + "".join(block_text(n, c) for n, c in enumerate(chunks, start=1))


def covering(chunks: list[Chunk], hits: list[Hit], count: int) -> list[Chunk]:
    """The index chunks that hold the retrieved passages (a passage merged from overlapping
    chunks gives each of them), best first, at most `count`."""
    numbers = list(dict.fromkeys(n for h in hits for n in overlapping(chunks, h.chunk)))
    return [chunks[n - 1] for n in numbers[:count]]


def passage_request(question: str, hits: list[Hit], key: list[Highlight], chosen: list[Chunk], states: Path,
                    *, max_tokens: int, temperature: float, show_key: bool = True,
                    key_budget: int = 10_000) -> GenerationRequest:
    """The request over `chosen` (numbered from 1), whose states `states` keeps: the system
    message is put together from them; the model reads only the question and (`show_key`) the
    key sentences within `key_budget` tokens (the best one at least), which, read now, see every
    passage (each passage saw none of the others)."""
    mapped = [m for h in key if (m := locate(chosen, hits[h.marker - 1].chunk, h)) is not None]
    kept: list[Highlight] = []
    for h in mapped if show_key else []:
        if kept and count_tokens(" ".join(k.sentence for k in [*kept, h])) > key_budget:
            break
        kept.append(h)
    shown = " ".join(f"{h.sentence} [{h.marker}]" for h in kept)
    lead = f"Most relevant sentences: {shown}\n\n" if shown else ""
    messages = [
        Message(role="system", content=system_message(chosen)),
        Message(role="user", content=f"{lead}Question: {question}\n{ANSWER_INSTRUCTION}"),
    ]
    return GenerationRequest(question=question, passages=[Hit(chunk=c, score=0.0, rank=n) for n, c in enumerate(chosen, 1)],
                             messages=messages, highlights=mapped if len(mapped) == len(key) else None,
                             passage_states=str(states), max_tokens=max_tokens, temperature=temperature)


def state_key(fingerprint: str, chunk: Chunk) -> str:
    """The name of a passage's state: the model, the system prompt and the passage as read."""
    h = hashlib.sha256()
    for part in (fingerprint, SYSTEM_PROMPT, block_text(1, chunk)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def folder(index_dir: Path) -> Path:
    """Where an index folder's passage states are kept."""
    return index_dir / FOLDER / SUBFOLDER


class StateFolder:
    """Saved passage states on disk, named by `state_key`, bounded to `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int | None = None) -> None:
        self.folder = path
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def missing(self, fingerprint: str, chunks: list[Chunk]) -> list[Chunk]:
        """The chunks whose state is not saved."""
        return [c for c in chunks if not self.has(state_key(fingerprint, c))]

    def load(self, key: str) -> bytes | None:
        """A saved state (marked as used now), or None."""
        path = self.path(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:
            return None
        return data

    def save(self, key: str, data: bytes) -> None:
        """Write a state (aside, then renamed: a reader never sees half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.path(key))

    def usage(self) -> tuple[int, int]:
        """(states, bytes) on disk."""
        files = list(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []
        return len(files), sum(f.stat().st_size for f in files)

    def evict(self, keep: set[str] = frozenset()) -> int:  # type: ignore[assignment]
        """Remove the least recently used states until the folder is within its bound (`keep`:
        the keys in use right now, removed last). Returns how many were removed."""
        if not self.folder.is_dir() or self.max_bytes is None:
            return 0
        entries = []
        for f in self.folder.glob(f"*{SUFFIX}"):
            try:
                st = f.stat()
            except OSError:
                continue
            entries.append((f.stem in keep, st.st_mtime, st.st_size, f))
        total = sum(e[2] for e in entries)
        removed = 0
        for _, _, size, f in sorted(entries, key=lambda e: (e[0], e[1])):
            if total <= self.max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed


class PassageStates(StateFolder):
    """The passage states of one index folder, and the one reader that saves the missing ones."""

    def __init__(self, index_dir: Path, *, max_bytes: int) -> None:
        super().__init__(folder(index_dir), max_bytes=max_bytes)
        self._lock = threading.Lock()
        self._pending: tuple[str, list[Chunk], Callable[[], object]] | None = None
        self._reader: tuple[threading.Thread, object | None] | None = None
        self._closed = False
        self.failed: str | None = None
        self.read_count = 0  # passages read since this object was made (tests, the page's status)
        self._progress: tuple[int, int] | None = None  # (read, to read) of the reader's current list
        self._build: str | None = None  # the build whose chunks the reader was given last
        lifecycle.track(self)

    def progress(self) -> tuple[int, int] | None:
        """(passages read, passages to read) while the reader works; None when it does not."""
        with self._lock:
            return self._progress if self._reader is not None else None

    def reading_build(self, build: str) -> bool:
        """Whether the reader is at work on `build`'s chunks already."""
        with self._lock:
            return self._reader is not None and self._build == build

    def reading(self) -> bool:
        with self._lock:
            return self._reader is not None

    def read_in_background(self, fingerprint: str, chunks: list[Chunk], make_model: Callable[[], object],
                           *, build: str | None = None) -> bool:
        """Read and save the states `chunks` lack, in their order, in a model context of its own
        (`make_model()`, a `PassageCache`). A call for another build replaces the chunks still to
        read (the newest build wins); one for the build being read leaves the reader be. False
        when nothing is missing or this is closed."""
        if build is not None and self.reading_build(build):
            return True
        todo = list({c.id: c for c in self.missing(fingerprint, chunks)}.values())
        if not todo or self._closed:
            return False
        with self._lock:
            self._build = build
            self._pending = (fingerprint, todo, make_model)
            if self._reader is not None:
                return True
            self._reader = (lifecycle.start_worker(self._read, name="rag-passage-states"), None)
        return True

    def _read(self) -> None:
        model = None
        try:
            while True:
                with self._lock:
                    pending, self._pending = self._pending, None
                    if pending is None or self._closed:
                        return
                fingerprint, todo, make_model = pending
                if model is None:
                    model = make_model()  # loaded at normal priority: a load cannot be stopped
                    with self._lock:
                        self._reader = (threading.current_thread(), model)
                    lower_priority()
                with self._lock:
                    self._progress = (0, len(todo))
                self.save_now(model, fingerprint, todo, background=True,
                              stop=lambda: self._closed or self._pending is not None or lifecycle.stopping(),
                              on_read=lambda done: self._set_progress(done, len(todo)))
        except Exception as exc:  # answers keep reading the passages themselves
            if not (self._closed or lifecycle.stopping()):
                self.failed = f"{type(exc).__name__}: {exc}"
                log.warning("passage states not saved (%s); answers read their passages", exc)
        finally:
            if model is not None:
                abilities.close(model)
            with self._lock:
                self._reader = None

    def _set_progress(self, done: int, total: int) -> None:
        with self._lock:
            self._progress = (done, total)

    def save_now(self, model: object, fingerprint: str, chunks: list[Chunk], *, background: bool = False,
                 stop: Callable[[], bool] = lambda: False, on_read: Callable[[int], None] = lambda done: None) -> int:
        """Read and save the states `chunks` lack with `model` (a `PassageCache`), in this thread,
        until `stop()`; the folder kept within its bound, these states last to go. Returns how
        many passages were read."""
        reader = abilities.passage_cache(model)
        if reader is None:
            return 0
        keep = {state_key(fingerprint, c) for c in chunks}
        self.evict(keep)
        count = 0
        for done, chunk in enumerate(chunks, start=1):
            if stop():
                break
            key = state_key(fingerprint, chunk)
            if not self.has(key):
                self.save(key, reader.read_passage(block_text(1, chunk), background=background))
                self.read_count += 1
                count += 1
            on_read(done)
        self.evict(keep)
        return count

    def close(self) -> None:
        """Stop the reader (its read aborted within a step) and wait for it."""
        with self._lock:
            self._closed = True
            self._pending = None
            reader = self._reader
        if reader is not None:
            thread, model = reader
            if model is not None:
                abilities.close(model)
            lifecycle.join(thread)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the reader to finish everything asked of it (benchmarks, tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.reading():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

