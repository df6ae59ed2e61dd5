"""The stream every way of asking returns: text pieces as they are generated, then the Answer."""

from __future__ import annotations

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
