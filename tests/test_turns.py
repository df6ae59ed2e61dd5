"""Answers worked on at once, the others waiting in order and told their place (rag.streaming.Turns),
and what the chat and the API are told meanwhile (a Note: a piece without text)."""

from __future__ import annotations

import threading

from rag.streaming import AnswerStream, Turns, waiting_note
from rag.types import Note


def test_a_turn_is_given_at_once_when_there_is_room():
    turns = Turns(2)
    assert list(turns.wait()) == []
    assert list(turns.wait()) == []
    turns.leave()
    turns.leave()


def test_waiting_requests_are_told_their_place_and_go_in_order():
    turns = Turns(1)
    assert list(turns.wait()) == []  # the first is being answered
    order: list[str] = []
    places: dict[str, list[int]] = {"second": [], "third": []}
    second_waits = threading.Event()

    def ask(name: str) -> None:
        for ahead in turns.wait(every=0.05):
            places[name].append(ahead)
            if name == "second":
                second_waits.set()
        order.append(name)
        turns.leave()

    second = threading.Thread(target=ask, args=("second",))
    second.start()
    assert second_waits.wait(5)
    third = threading.Thread(target=ask, args=("third",))
    third.start()
    while not places["third"]:
        pass
    turns.leave()  # the first is done
    second.join(5)
    third.join(5)
    assert order == ["second", "third"]
    assert set(places["second"]) == {0}
    assert 1 in places["third"]  # one ahead of it while the second waited


def test_a_request_that_gives_up_its_place_lets_the_next_one_go():
    turns = Turns(1)
    list(turns.wait())
    waiting = turns.wait(every=0.01)
    assert next(waiting) == 0
    waiting.close()  # the client went away
    turns.leave()
    assert list(turns.wait()) == []  # nobody left ahead


def test_a_note_adds_no_text_to_the_answer():
    note = Note(waiting_note(2))
    assert note == "" and note.text == "Waiting for the model: 2 questions ahead of yours"
    seen: list[str] = []
    stream = AnswerStream(iter([note, "Katla ", "erupted."]), lambda raw, error: seen.append(raw) or None)
    assert [p for p in stream if not isinstance(p, Note)] == ["Katla ", "erupted."]
    assert seen == ["Katla erupted."]
    assert waiting_note(0) == "Waiting for the model: yours is next"
