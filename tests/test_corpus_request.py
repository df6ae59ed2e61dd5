"""The per-question part of a corpus prompt: retrieval's passages and key sentences marked into
the corpus chunks, merged passages included (no model needed)."""

from __future__ import annotations

from pathlib import Path

from rag.corpus_cache import corpus_request
from rag.types import Chunk, Highlight, Hit

TEXT = ("Hekla is the most active volcano of Iceland. It erupted in 1947. "
        "Katla lies under a glacier and last erupted in 1918. Askja erupted in 1961.")


def chunk(n: int, start: int, end: int, source: str = "v.txt") -> Chunk:
    return Chunk(id=f"{source}#{n}", source=source, ordinal=n, text=TEXT[start:end], start_char=start,
                 end_char=end, start_line=1, end_line=1, tokens=10)


def test_a_key_sentence_of_a_merged_passage_is_marked_into_the_corpus_chunk_holding_it():
    first, second = chunk(1, 0, 70), chunk(2, 45, len(TEXT))  # overlapping, as the chunker makes them
    other = chunk(1, 0, 40, source="w.txt")
    merged = chunk(9, 0, len(TEXT))  # retrieval merged the two
    sentence = "Katla lies under a glacier and last erupted in 1918."
    at = TEXT.index(sentence)
    key = Highlight(marker=1, sentence=sentence, start=at, end=at + len(sentence), score=0.9)
    request = corpus_request("When did Katla erupt?", [Hit(chunk=merged, score=1.0, rank=1)], [key],
                             [other, first, second], Path("state"), max_tokens=100, temperature=0.1)
    [mapped] = request.highlights
    assert mapped.marker == 3  # the corpus's third chunk, `second`
    holder = request.passages[mapped.marker - 1].chunk
    assert holder.text[mapped.start:mapped.end] == sentence
    assert "Passages most related to the question: [2], [3]" in request.messages[1].content
    assert sentence not in request.messages[1].content  # the model has read it in the corpus already


def test_a_key_sentence_no_corpus_chunk_holds_whole_drops_the_highlights():
    first, second = chunk(1, 0, 80), chunk(2, 80, len(TEXT))  # no overlap: a sentence straddles them
    sentence = TEXT[60:100]
    key = Highlight(marker=1, sentence=sentence, start=60, end=100, score=0.9)
    request = corpus_request("q?", [Hit(chunk=chunk(9, 0, len(TEXT)), score=1.0, rank=1)], [key],
                             [first, second], Path("state"), max_tokens=100, temperature=0.1)
    assert request.highlights is None  # the extractive fallback selects again
