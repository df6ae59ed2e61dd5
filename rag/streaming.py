"""The stream every way of asking returns: text pieces as they are generated, then the Answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Callable

from rag.errors import RagError
from rag.refusal import REFUSAL
from rag.types import Answer


class AnswerStream:
    """Iterate for text pieces as they are generated; `result()` drains and returns the Answer.

    `status` says what is happening before the first piece (for a page or a terminal to show).
    """

    def __init__(self, pieces: Iterator[str], finish: Callable[[str, RagError | None], Answer],
                 *, status: str = "") -> None:
        self._pieces = pieces
        self._finish = finish
        self.status = status
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

    @classmethod
    def refusal(cls, finish: Callable[[str, RagError | None], Answer]) -> "AnswerStream":
        """The stream of an answer refused before any model wrote (one piece: the refusal)."""
        return cls(iter([REFUSAL]), finish)

    def result(self) -> Answer:
        """The final Answer, reading whatever has not been read yet."""
        if self.answer is None:
            for _ in self:
                pass
        assert self.answer is not None  # set by the loop above, or it raised
        return self.answer

    def close(self) -> None:
        """Stop early (the user pressed stop); the answer keeps what arrived."""
        close = getattr(self._pieces, "close", None)
        if close:
            close()


def waiting_note(ahead: int) -> str:
    """What a request waiting for the local model is told, with `ahead` requests before it."""
    if not ahead:
        return "Waiting for the model: yours is next"
    return f"Waiting for the model: {ahead} question{'s' if ahead != 1 else ''} ahead of yours"


class Turns:
    """Answers worked on at once (`size`); the others wait in order of arrival, told their place."""

    def __init__(self, size: int) -> None:
        self._cv = threading.Condition()
        self._size = size
        self._running = 0
        self._queue: list[object] = []

    def wait(self, every: float = 0.5) -> Iterator[int]:
        """Wait for a turn, yielding how many wait ahead every `every` seconds meanwhile (nothing
        when there is room at once); `leave()` after. Closing it early gives the place up."""
        ticket = object()
        granted = False
        with self._cv:
            self._queue.append(ticket)
        try:
            while True:
                with self._cv:
                    if self._queue[0] is ticket and self._running < self._size:
                        self._queue.pop(0)
                        self._running += 1
                        granted = True
                        self._cv.notify_all()
                        return
                    self._cv.wait(every)
                    ahead = self._queue.index(ticket)
                    ready = ahead == 0 and self._running < self._size
                if not ready:
                    yield ahead
        finally:
            if not granted:
                with self._cv:
                    self._queue.remove(ticket)
                    self._cv.notify_all()

    def leave(self) -> None:
        with self._cv:
            self._running -= 1
            self._cv.notify_all()
