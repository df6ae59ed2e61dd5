"""A generator bounded by a deadline: waiting for the backend's next piece stops at a set time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from rag.errors import GeneratorError
from rag.generation import abilities
from rag.generation.base import Generator
from rag.types import GenerationRequest, Note

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class DeadlineReached(Exception):
    """The deadline passed while waiting for the backend's next piece."""


def until(pieces: Iterator[str], deadline: float) -> Iterator[str]:
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
                raise DeadlineReached
            try:
                item = handoff.get(timeout=remaining)
            except queue.Empty:
                raise DeadlineReached from None
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        cancel.set()


class DeadlineGenerator:
    """`inner`, stopped at `deadline` (a `time.perf_counter()` value): nothing by then is a
    GeneratorError (so a fallback can answer); a cut after some text keeps it and says so in
    `note`. One per answer."""

    def __init__(self, inner: Generator, deadline: float, *, label: str = "the deadline") -> None:
        self.inner = inner
        self.name = inner.name
        self.context_tokens = inner.context_tokens
        self.trusted_markers = abilities.trusted_markers(inner)
        self.deadline = deadline
        self.limit = label
        self.note: str | None = None

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        bounded = until(self.inner.stream(request), self.deadline)
        said = False
        try:
            for piece in bounded:
                said = said or not isinstance(piece, Note)
                yield piece
        except DeadlineReached:
            if not said:
                raise GeneratorError(f"{self.inner.name} gave no answer within {self.limit}") from None
            self.note = f"the answer was cut off after {self.limit}"
        finally:
            bounded.close()  # stopped early: tell the worker to stop
