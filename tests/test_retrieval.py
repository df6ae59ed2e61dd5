"""Retrieval over a real index built under tmp_path with the deterministic hashing embedder."""

from __future__ import annotations

import pytest

from rag.errors import ConfigError
from rag.indexer import build_index
from rag.pipeline import Rag
from rag.retrieval import MODES, RRF_K, _dedupe, merge_chunks
from rag.types import Chunk, Hit
from rag.vectorstore import fuse

from fakes import CORPUS, line_of, write_corpus

DANUBE = "Which cities stand on the Danube?"
OFF_TOPIC = "Quantum chromodynamics gluon confinement?"


@pytest.fixture
def rag(make_settings, in_tmp) -> Rag:
    write_corpus(in_tmp / "seeds")
    # Small chunks (about one sentence each) so a hit points at one line.
    settings = make_settings(chunk_tokens=24, chunk_overlap=0)
    build_index(settings)
    return Rag(settings)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_ranks_the_line_with_the_fact_first(rag, mode):
    hits = rag.retrieve(DANUBE, mode=mode, top_k=3)
    assert hits, mode
    top = hits[0].chunk
    assert top.source == "notes/rivers.txt"
    assert top.start_line == top.end_line == line_of(CORPUS["notes/rivers.txt"], "Vienna")
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert len(hits) <= 3
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # the relevance floor reads the cosine, whatever the ranking mode
    assert all(h.dense_score is not None for h in hits)


@pytest.mark.parametrize("mode", MODES)
def test_every_hit_is_a_verbatim_slice_at_its_lines(rag, mode):
    for question in (DANUBE, "When did Katla last erupt?", "sourdough starter flour water"):
        for hit in rag.retrieve(question, mode=mode, top_k=10):
            c = hit.chunk
            text = CORPUS[c.source]
            assert text[c.start_char : c.end_char] == c.text
            assert c.start_line == text.count("\n", 0, c.start_char) + 1
            assert c.text in "\n".join(text.split("\n")[c.start_line - 1 : c.end_line])


def test_bm25_finds_nothing_without_shared_words_and_dense_always_answers(rag):
    assert rag.retrieve(OFF_TOPIC, mode="bm25") == []
    dense = rag.retrieve(OFF_TOPIC, mode="dense")
    assert dense and max(h.dense_score for h in dense) < rag.settings.relevance_floor


def test_unknown_mode_names_the_valid_ones(rag):
    with pytest.raises(ConfigError, match="dense, bm25, hybrid"):
        rag.retrieve(DANUBE, mode="fuzzy")


def test_bm25_score_is_reported_only_for_lexical_matches(rag):
    hits = rag.retrieve(DANUBE, mode="hybrid", top_k=10)
    assert hits[0].bm25_score is not None and hits[0].bm25_score > 0
    assert any(h.bm25_score is None for h in hits)


# -- fusion and de-duplication, on hand-made hits ----------------------------------------------------
def test_rrf_puts_a_row_found_by_both_lists_first():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    lexical = [(3, 12.0), (4, 11.0)]
    fused = fuse(dense, lexical, "hybrid")
    assert fused[0][0] == 3
    assert fused[0][1] == pytest.approx(1 / (RRF_K + 3) + 1 / (RRF_K + 1))
    assert {row for row, _ in fused} == {1, 2, 3, 4}
    assert fuse(dense, lexical, "dense") == dense
    assert fuse(dense, lexical, "bm25") == lexical


def _chunk(source: str, text: str, start: int, end: int, ordinal: int = 0) -> Chunk:
    return Chunk(
        id=f"{source}#{ordinal}",
        source=source,
        ordinal=ordinal,
        text=text[start:end],
        start_char=start,
        end_char=end,
        start_line=text.count("\n", 0, start) + 1,
        end_line=text.count("\n", 0, end - 1) + 1,
        tokens=len(text[start:end].split()),
    )


def _hit(chunk: Chunk, rank: int) -> Hit:
    return Hit(chunk=chunk, score=1.0 / rank, dense_score=0.5, rank=rank)


def test_overlapping_chunks_of_one_file_merge_into_one_verbatim_passage():
    text = CORPUS["volcanoes.txt"]
    a = _chunk("volcanoes.txt", text, 0, text.index("It erupted") + 10, 0)
    b = _chunk("volcanoes.txt", text, text.index("Hekla"), len(text), 1)
    other = _chunk("bread.md", CORPUS["bread.md"], 0, len(CORPUS["bread.md"]))
    merged = merge_chunks(b, a)
    assert merged.text == text[merged.start_char : merged.end_char] == text
    assert (merged.start_line, merged.end_line) == (1, text.count("\n"))
    kept = _dedupe([_hit(a, 1), _hit(other, 2), _hit(b, 3)])
    assert [h.chunk.source for h in kept] == ["volcanoes.txt", "bread.md"]
    assert [h.rank for h in kept] == [1, 2]
    assert kept[0].chunk.text == text


def test_a_passage_another_file_repeats_is_dropped():
    text = CORPUS["notes/rivers.txt"]
    first = _chunk("notes/rivers.txt", text, 0, len(text))
    copy = _chunk("copy/rivers.txt", text, 0, len(text))
    kept = _dedupe([_hit(first, 1), _hit(copy, 2)])
    assert [h.chunk.source for h in kept] == ["notes/rivers.txt"]
