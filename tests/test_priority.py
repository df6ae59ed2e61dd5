"""Answers first, but a background read cannot starve (rag.generation.llama_priority), with a fake
reader and fake answers: no model."""

from __future__ import annotations

import threading
import time

import pytest

from rag.generation import llama_priority as priority


class Reader:
    """A background read: steps of `step` seconds whenever it may take one."""

    def __init__(self, step: float = 0.03) -> None:
        self.step = step
        self.steps: list[tuple[float, float]] = []
        self.stepping = False
        self.paused = 0  # times told to stop a step in flight

    def pause(self) -> None:
        self.paused += self.stepping

    def run(self, until: threading.Event) -> None:
        with priority.reading_behind(self):
            while not until.is_set():
                if not priority.may_read(self):  # as the engine asks: woken when an answer ends
                    continue
                started, self.stepping = time.monotonic(), True
                with priority.stepping(self):
                    time.sleep(self.step)
                self.stepping = False
                self.steps.append((started, time.monotonic()))


@pytest.fixture
def fresh(monkeypatch):
    """The priority state of a process that has not answered yet, with short waits."""
    monkeypatch.setattr(priority, "_answering", [0])
    monkeypatch.setattr(priority, "_last_answer", [0.0])
    monkeypatch.setattr(priority, "_behind", set())
    monkeypatch.setattr(priority, "_sharing", set())
    monkeypatch.setattr(priority, "_busy", {"since": None, "reading": 0.0})
    monkeypatch.setattr(priority, "QUIET_SECONDS", 0.5)
    monkeypatch.setattr(priority, "PATIENCE", 0.6)


def answer_continuously(seconds: float, held: list[tuple[float, float]]) -> None:
    """Answers back to back, each use right after the last (as a question's answer follows its
    reading, and a waiting question the one before), for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with priority.answering():
            started = time.monotonic()
            time.sleep(0.08)
            held.append((started, time.monotonic()))


def test_a_background_read_waits_for_a_short_spell_of_answers(fresh):
    reader, stop, held = Reader(), threading.Event(), []
    worker = threading.Thread(target=reader.run, args=(stop,))
    worker.start()
    try:
        time.sleep(0.05)
        began = time.monotonic()  # (a step in flight then is stopped by the real engine)
        answer_continuously(0.4, held)  # shorter than PATIENCE
        time.sleep(priority.QUIET_SECONDS + 0.3)
        during = [s for s in reader.steps if began <= s[0] < held[-1][1] + priority.QUIET_SECONDS - 0.05]
    finally:
        stop.set()
        worker.join()
    assert during == []  # nothing read while answers kept coming, nor in the quiet after them
    assert reader.steps[-1][0] > held[-1][1]  # then it went on


def test_under_answers_that_never_stop_a_background_read_takes_its_share_between_them(fresh, monkeypatch):
    monkeypatch.setattr(priority, "QUIET_SECONDS", 0.08)  # shorter than a step: a share is no pause
    reader, stop, held = Reader(step=0.1), threading.Event(), []
    answers = threading.Thread(target=answer_continuously, args=(3.0, held))
    answers.start()
    time.sleep(0.02)  # answers are already going when the read starts
    worker = threading.Thread(target=reader.run, args=(stop,))
    worker.start()
    answers.join()
    stop.set()
    worker.join()

    first = held[0][0]
    shares = [s for s in reader.steps if s[0] < held[-1][1]]
    assert len(shares) >= 5  # it went on under load (it ends, however long the load lasts)
    after = held[-1][1] - first - priority.PATIENCE
    reading = sum(end - start for start, end in shares)
    assert reading >= priority.BACKGROUND_SHARE * after * 0.6  # its share, near enough
    assert all(start - first >= priority.PATIENCE - 0.01 for start, _ in shares)  # only after PATIENCE
    assert reading <= priority.BACKGROUND_SHARE * (held[-1][1] - first) + reader.step * 2  # about its share
    for start, end in shares:  # one at a time: an answer never runs during a share's step
        assert not any(a < end and start < b for a, b in held)
    assert reader.paused == 0  # and no share's step was stopped for an answer
