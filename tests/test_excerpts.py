"""The windowed context: excerpts around the best sentences, verbatim slices whose markers map to
the right file and lines."""

from __future__ import annotations

import pytest

from rag.chunking import count_tokens
from rag.excerpts import excerpts, slice_hit
from rag.pipeline import Rag
from rag.selection import select
from rag.types import Chunk, Hit

from fakes import CORPUS, line_of, scripted, write_corpus  # noqa: F401

RIVER = (
    "Rivers of Europe\n"
    "The Rhine rises in the Swiss Alps.\n"
    "It flows north through Basel and Cologne.\n"
    "The Rhine reaches the North Sea in the Netherlands.\n"
    "Its delta is shared with the Meuse.\n"
    "Barges carry coal and grain along it.\n"
    "Tourists cruise the Middle Rhine gorge.\n"
    "The Lorelei rock stands above the gorge.\n"
)


@pytest.fixture
def windowed(make_settings, in_tmp, scripted):  # noqa: F811
    write_corpus(in_tmp / "seeds", {**CORPUS, "rhine.txt": RIVER})
    settings = make_settings(chunk_tokens=120, chunk_overlap=0, generator="scripted",
                             prompt_context="windowed", prompt_budget_tokens=40, prompt_window=1)
    rag = Rag(settings)
    rag.index()
    return rag


def file_lines(text: str, start: int, end: int) -> str:
    return "\n".join(text.split("\n")[start - 1 : end])


def test_an_excerpt_is_a_verbatim_slice_with_its_own_lines(windowed):
    [hit] = [h for h in windowed.retrieve("Where does the Rhine reach the sea?") if h.chunk.source == "rhine.txt"][:1]
    start = hit.chunk.text.index("The Rhine reaches")
    narrowed = slice_hit(hit, start, hit.chunk.text.index("Barges"))
    line = line_of(RIVER, "The Rhine reaches")
    assert (narrowed.chunk.start_line, narrowed.chunk.end_line) == (line, line + 1)
    assert narrowed.chunk.text == file_lines(RIVER, line, line + 1)


def test_the_window_holds_the_best_sentence_and_its_neighbours_within_the_budget(windowed):
    question = "Where does the Rhine reach the sea?"
    hits = windowed.retrieve(question)
    selection = select(question, hits, windowed.embedder)
    parts, key = excerpts(selection, hits, budget=40, neighbours=1)
    text = "\n".join(p.chunk.text for p in parts)
    assert "The Rhine reaches the North Sea in the Netherlands." in text
    assert "It flows north through Basel and Cologne." in text  # the sentence before
    assert "Its delta is shared with the Meuse." in text  # and after
    assert "Lorelei" not in text  # far from the answer, over the budget
    assert sum(count_tokens(p.chunk.text) for p in parts) <= 40 + max(count_tokens(p.chunk.text) for p in parts)
    for h in key:  # the key sentences point at the excerpt that holds them
        assert h.sentence in " ".join(parts[h.marker - 1].chunk.text[h.start : h.end].split())


def test_every_marker_on_the_windowed_prompt_maps_to_the_right_file_and_lines(windowed, scripted):  # noqa: F811
    question = "Where does the Rhine reach the sea?"
    scripted.enqueue("The Rhine reaches the North Sea in the Netherlands [1].")
    answer = windowed.ask(question)
    [request] = scripted.requests
    assert request.passages[0].chunk.source == "rhine.txt"
    assert "Passage [1] (rhine.txt; under" in request.messages[1].content  # a brief label: no lines
    assert "Lorelei" not in request.messages[1].content
    [citation] = answer.citations
    line = line_of(RIVER, "The Rhine reaches")
    assert (citation.source, citation.start_line, citation.end_line) == ("rhine.txt", line, line)
    assert citation.verified
    assert citation.quote in file_lines(RIVER, citation.start_line, citation.end_line)


def test_the_windowed_prompt_is_much_shorter_than_the_passages(windowed, scripted, make_settings):  # noqa: F811
    question = "Where does the Rhine reach the sea?"
    windowed.ask(question)
    whole = Rag(windowed.settings.model_copy(update={"prompt_context": "passages"}))
    whole.ask(question)
    short, long = (count_tokens(r.messages[1].content) for r in scripted.requests)
    assert short < long


SECTIONS = (
    "Chinese Models\n"
    "DeepSeek:\n"
    "A lab that trains language models cheaply.\n"
    "Alibaba's Qwen:\n"
    "A family of open-weight models.\n"
    "They cover many languages.\n"
)


def _section_hit(header: str) -> Hit:
    chunk = Chunk(id="s#0", source="s.txt", ordinal=0, text=SECTIONS.rstrip(), start_char=0,
                  end_char=len(SECTIONS.rstrip()), start_line=1, end_line=6, tokens=count_tokens(SECTIONS),
                  header=header)
    return Hit(chunk=chunk, score=1.0, rank=1)


def test_an_excerpt_keeps_its_chunk_s_header_under_the_nearest_heading():
    hit = _section_hit("Models > Chinese Models")
    lab = SECTIONS.index("A lab")
    assert slice_hit(hit, lab, SECTIONS.index("Alibaba")).chunk.header == "Models > DeepSeek"
    qwen = slice_hit(hit, SECTIONS.index("They cover"), len(SECTIONS.rstrip()))
    assert qwen.chunk.header == "Models > Alibaba's Qwen"
    assert qwen.chunk.text == "They cover many languages."  # the header is not in the text
    text = "No headings here.\nJust text."
    plain = Hit(chunk=hit.chunk.model_copy(update={"text": text, "end_char": len(text)}), score=1.0, rank=1)
    assert slice_hit(plain, text.index("Just"), len(text)).chunk.header == "Models > Chinese Models"
