"""Answers first: the local model's background reads (a corpus or passage state, in a context of
their own) yield to answers, since two cores cannot serve both at once.

A shared model's use (`answering`) makes background reads wait (`wait_until_idle`) and stops a
read's step in flight (`pause` on every engine registered by `reading_behind`); a background read
decodes BACKGROUND_STEP tokens at a time and goes on QUIET_SECONDS after the last answer's use.

It cannot starve: once answers have kept the model busy for PATIENCE seconds on end, a read takes
a step between two uses whenever its steps have had less than BACKGROUND_SHARE of the time
(`may_read`): an answer that would start when a step is due hands over first, and answers wait
for that step (one, about a second) rather than share the cores with it.
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
# Under continuous answers, a background read's share of the model's time, after PATIENCE seconds:
# a choice, not a fit (a third keeps the answers meanwhile at two thirds of the model; the corpus
# state of the seeds was saved after 514 s with 8 clients asking, docs/BENCHMARKS.md).
BACKGROUND_SHARE, PATIENCE = 1 / 3, 20.0
# How long an answer waits for a read whose share is due to start its step (it is woken at once).
HAND_OVER_SECONDS = 0.5
MAX_OWED = 2.0  # seconds of its share a read may take back to back after it was kept waiting
lock = threading.Condition()
_answering = [0]
_last_answer = [0.0]
_behind: set = set()  # engines reading in the background right now (each has `pause()`)
_sharing: set = set()  # engines taking their share's step now (answers wait for it)
_wanting: set = set()  # engines whose background read waits for a step
_busy = {"since": None, "reading": 0.0}  # answers kept the model busy since; share steps' seconds since


@contextmanager
def answering() -> Iterator[None]:
    """A shared model is in use for an answer: background reads stop their step and wait (a
    step taken as its share ends first)."""
    with lock:
        handed = time.monotonic() + HAND_OVER_SECONDS
        while _sharing or (_wanting and _answering[0] == 0 and _share_due(time.monotonic())
                           and time.monotonic() < handed):
            lock.notify_all()  # a read whose share is due takes its step first
            lock.wait(0.05)
        now = time.monotonic()
        if _answering[0] == 0 and now - _last_answer[0] >= QUIET_SECONDS:
            _busy.update(since=now, reading=0.0)  # busy from now on
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
    return _wait(timeout, None)


def may_read(engine, timeout: float = 1.0) -> bool:
    """Wait (up to `timeout`) until `engine`'s background read may take a step: the model is
    quiet, or its share is due between two uses (then the step is not paused, answers wait for
    it, and its step runs in `stepping`). False at the timeout."""
    return _wait(timeout, engine)


def _share_due(now: float) -> bool:
    """Answers came on end for PATIENCE seconds (a shorter spell followed by quiet is waited out),
    and the read's steps since have had less than BACKGROUND_SHARE of the time."""
    since = _busy["since"]
    return (since is not None and _last_answer[0] - since >= PATIENCE
            and _busy["reading"] < BACKGROUND_SHARE * (now - since))


def _wait(timeout: float, engine) -> bool:
    deadline = time.monotonic() + timeout
    with lock:
        if engine is not None:
            _wanting.add(engine)
        try:
            while True:
                now = time.monotonic()
                quiet = QUIET_SECONDS - (now - _last_answer[0]) if _answering[0] == 0 else None
                if quiet is not None and quiet <= 0:
                    return True
                if quiet is not None and engine is not None and _share_due(now):  # between two uses
                    _sharing.add(engine)
                    return True
                if now >= deadline:
                    return False
                lock.wait(deadline - now if quiet is None else min(quiet, deadline - now))
        finally:
            _wanting.discard(engine)


@contextmanager
def stepping(engine) -> Iterator[None]:
    """A step of `engine`'s read (counted in its share if `may_read` gave it as one)."""
    started = time.monotonic()
    try:
        yield
    finally:
        _step_done(engine, time.monotonic() - started)


def _step_done(engine, seconds: float) -> None:
    """`engine`'s step is over (it took `seconds`): counted in its share if it was one."""
    with lock:
        if engine in _sharing:
            _sharing.discard(engine)
            # Time it did not take (no read was waiting) is not owed later beyond MAX_OWED.
            owed = BACKGROUND_SHARE * (time.monotonic() - seconds - _busy["since"]) - _busy["reading"]
            _busy["reading"] += max(0.0, owed - MAX_OWED) + seconds
            _last_answer[0] = time.monotonic()  # the model was in use: answers on end go on
            lock.notify_all()
