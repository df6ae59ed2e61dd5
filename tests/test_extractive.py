"""The extractive backend: which sentences it picks, and what it leaves out (lexical scoring only)."""

from __future__ import annotations

import re

from rag.generation.base import GenerationRequest
from rag.generation.extractive import ExtractiveGenerator
from rag.selection import is_heading
from rag.prompting import REFUSAL
from rag.types import Chunk, Hit


def hit(text: str, source: str, rank: int) -> Hit:
    chunk = Chunk(id=f"{source}-{rank}", source=source, ordinal=rank, text=text, start_char=0,
                  end_char=len(text), start_line=1, end_line=text.count("\n") + 1, tokens=len(text.split()))
    return Hit(chunk=chunk, score=1.0 / rank, rank=rank)


def answer(question: str, *passages: tuple[str, str]) -> str:
    hits = [hit(text, source, rank) for rank, (text, source) in enumerate(passages, start=1)]
    return ExtractiveGenerator().compose(GenerationRequest(question=question, passages=hits, messages=[]))


def cited(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"\[(\d+)\]", text)]


def test_adverbs_like_still_do_not_outweigh_the_words_of_the_claim():
    text = answer(
        "Where do the U.S. still have an advantage?",
        ("But the review still largely remains at the level of the U.S. trying to prevent leakage.", "a.txt"),
        ("While the U.S. has an advantage in areas like surveillance technology, China leads in chips.", "b.txt"),
    )
    assert text.startswith("While the U.S. has an advantage in areas like surveillance technology")


def test_a_close_sentence_from_the_same_file_is_kept_one_from_another_file_is_not():
    question = "Which cloud providers store the training data of the region?"
    same = answer(
        question,
        ("Cloud providers like Alibaba store the training data of the region. "
         "Huawei cloud providers also store training data of banks.", "a.txt"),
    )
    assert "Alibaba" in same and "Huawei" in same and cited(same) == [1, 1]
    other = answer(
        question,
        ("Cloud providers like Alibaba store the training data of the region.", "a.txt"),
        ("Huawei cloud providers also store training data of banks.", "b.txt"),
    )
    assert "Alibaba" in other and "Huawei" not in other and cited(other) == [1]


def test_a_strong_sentence_from_another_file_is_still_added():
    text = answer(
        "Which cloud providers store the training data of the region?",
        ("Cloud providers like Alibaba store the training data of the region.", "a.txt"),
        ("Cloud providers like Huawei store the training data of the region too.", "b.txt"),
    )
    assert cited(text) == [1, 2]


def test_pointer_words_and_headings_do_not_answer():
    assert is_heading("Leveraging Data as a Strategic Asset")
    assert not is_heading("Data is a strategic asset.")
    text = answer(
        "What does the article say about data as a strategic asset?",
        ("Leveraging Data as a Strategic Asset\nThe article covers many topics at length today. "
         "Data is a strategic asset for whoever trains the models.", "a.txt"),
    )
    assert text == "Data is a strategic asset for whoever trains the models. [1]"


def test_no_shared_word_is_a_refusal():
    assert answer("Who won the 2022 FIFA World Cup?", ("Chips and models shape the AI race.", "a.txt")) == REFUSAL
