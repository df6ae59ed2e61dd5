"""Answers first: the local model's background reads (a corpus or passage state, in a context of
their own) yield to answers, since two cores cannot serve both at once.

A shared model's use (`answering`) makes background reads wait (`wait_until_idle`) and stops a
read's step in flight (`pause` on every engine registered by `reading_behind`); a background read
decodes BACKGROUND_STEP tokens at a time and goes on QUIET_SECONDS after the last answer's use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Tokens a background read decodes between two looks at whether an answer is waiting (about
# half a second of the default model on two cores).
BACKGROUND_STEP = 32
# Seconds after a shared model was last used before background reading goes on: an answer uses
# it twice a moment apart (the reading pass, then the answer), and a user's next question follows.
QUIET_SECONDS = 2.0
lock = threading.Condition()
_answering = [0]
_last_answer = [0.0]
_behind: set = set()  # engines reading in the background right now (each has `pause()`)


@contextmanager
def answering() -> Iterator[None]:
    """A shared model is in use for an answer: background reads stop their step and wait."""
    with lock:
        _answering[0] += 1
        behind = list(_behind)
    for engine in behind:
        engine.pause()  # its step in flight stops within a graph step and is read again later
    try:
        yield
    finally:
        with lock:
            _answering[0] -= 1
            _last_answer[0] = time.monotonic()
            lock.notify_all()


@contextmanager
def reading_behind(engine) -> Iterator[None]:
    """`engine` reads in the background meanwhile (an answer pauses it)."""
    with lock:
        _behind.add(engine)
    try:
        yield
    finally:
        with lock:
            _behind.discard(engine)


def wait_until_idle(timeout: float = 1.0) -> bool:
    """Wait (up to `timeout`) while a shared model is answering or was in the last
    QUIET_SECONDS; True when it is quiet."""
    deadline = time.monotonic() + timeout
    with lock:
        while True:
            now = time.monotonic()
            quiet = QUIET_SECONDS - (now - _last_answer[0]) if _answering[0] == 0 else None
            if quiet is not None and quiet <= 0:
                return True
            if now >= deadline:
                return False
            lock.wait(deadline - now if quiet is None else min(quiet, deadline - now))
