"""Markers become citations: bounds-checked, quoted from the passage, verified against the file."""

from __future__ import annotations

import pytest

from rag.citations import (
    attribute,
    best_quote,
    build_citations,
    claims_for,
    correct_markers,
    parse_markers,
    supported,
    verify,
)
from rag.embedding import HashingEmbedder
from rag.types import Chunk, Hit

from fakes import CORPUS, line_of


def hit_of(source: str, text: str, start: int = 0, end: int | None = None, rank: int = 1) -> Hit:
    """A hit whose chunk is text[start:end] of a file, with the line span the chunker would give."""
    end = len(text) if end is None else end
    chunk = Chunk(
        id=f"{source}:{start}",
        source=source,
        ordinal=0,
        text=text[start:end],
        start_char=start,
        end_char=end,
        start_line=text.count("\n", 0, start) + 1,
        end_line=text.count("\n", 0, max(start, end - 1)) + 1,
        tokens=len(text[start:end].split()),
    )
    return Hit(chunk=chunk, score=1.0 / rank, dense_score=0.5, rank=rank)


# -- parse_markers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "n", "text", "markers"),
    [
        ("Hekla erupted in 1947 [1].", 3, "Hekla erupted in 1947 [1].", [1]),
        # out of range: dropped from the text and from the list, with the space before the stop
        ("Hekla erupted in 1947 [7].", 3, "Hekla erupted in 1947.", []),
        # [0] would be passages[-1]: dropped, never trusted
        ("Hekla erupted in 1947 [0].", 3, "Hekla erupted in 1947.", []),
        # no markers at all
        ("Hekla erupted in 1947.", 3, "Hekla erupted in 1947.", []),
        # a list becomes one marker a number; invalid members drop out of the list
        ("Both erupted [1, 2].", 3, "Both erupted [1][2].", [1, 2]),
        ("Both erupted [2; 1].", 3, "Both erupted [2][1].", [2, 1]),
        ("Both erupted [0, 2, 9].", 3, "Both erupted [2].", [2]),
        ("Both erupted [ 3 ].", 3, "Both erupted [3].", [3]),
        # repeated: reported once, in order of first appearance
        ("A [2]. B [1]. C [2][2]. D [1, 1].", 3, "A [2]. B [1]. C [2][2]. D [1].", [2, 1]),
        # no passages: every marker is out of range
        ("Hekla [1].", 0, "Hekla.", []),
    ],
)
def test_parse_markers(raw, n, text, markers):
    assert parse_markers(raw, n) == (text, markers)


def test_parse_markers_leaves_other_brackets_alone():
    text, markers = parse_markers("See [note] and [a1] but cite [2].", 2)
    assert text == "See [note] and [a1] but cite [2]."
    assert markers == [2]


# -- which sentence a marker belongs to -------------------------------------------------------------
def test_marker_after_the_full_stop_belongs_to_the_sentence_before():
    answer = "Katla last erupted in 1918. [2] Hekla erupted in 1947 and 2000. [1]"
    assert claims_for(answer, 2) == "Katla last erupted in 1918."
    assert claims_for(answer, 1) == "Hekla erupted in 1947 and 2000."


def test_claims_for_a_marker_used_twice_joins_its_sentences():
    answer = "Hekla is active [1]. Katla is under ice [2]. Hekla erupted in 2000 [1]."
    assert claims_for(answer, 1) == "Hekla is active [1]. Hekla erupted in 2000 [1]."


def test_best_quote_picks_the_supporting_sentence_and_its_lines():
    text = CORPUS["volcanoes.txt"]
    hit = hit_of("volcanoes.txt", text)
    quote, first, last = best_quote(hit, "Katla erupted in 1918 under a glacier. [1]")
    assert quote == "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918."
    assert first == last == line_of(text, "Katla lies")


# -- verify -----------------------------------------------------------------------------------------
def test_verify_quote_at_its_lines():
    text = CORPUS["volcanoes.txt"]
    n = line_of(text, "Hekla is")
    assert verify("Hekla is the most active volcano in southern Iceland.", n, n, text)
    # whitespace may differ (a quote across a line break), the words may not
    assert verify("Hekla is the most active volcano in southern Iceland. It erupted in 1947",
                  n, n + 1, text)
    assert not verify("Hekla is the most active volcano in southern Iceland.", n + 1, n + 1, text)
    assert not verify("Hekla is the least active volcano", n, n, text)
    assert not verify("   ", n, n, text)
    assert not verify("Hekla is the most active volcano", n, n, None)


def test_citations_point_at_the_exact_lines_of_the_file():
    files = dict(CORPUS)
    hits = [hit_of("volcanoes.txt", files["volcanoes.txt"]), hit_of("bread.md", files["bread.md"], rank=2)]
    answer, markers = parse_markers(
        "The dough rises for twelve hours [2]. Katla last erupted in 1918 [1, 2].", len(hits)
    )
    citations = build_citations(answer, markers, hits, files.get)
    assert [c.marker for c in citations] == [2, 1]
    by_marker = {c.marker: c for c in citations}
    bread, volcano = by_marker[2], by_marker[1]
    assert bread.source == "bread.md"
    assert bread.start_line == bread.end_line == line_of(files["bread.md"], "The dough rises")
    assert volcano.source == "volcanoes.txt"
    assert volcano.start_line == line_of(files["volcanoes.txt"], "Katla")
    for c in citations:
        lines = files[c.source].split("\n")[c.start_line - 1 : c.end_line]
        assert c.quote in "\n".join(lines)
        assert c.verified


def test_citation_into_the_middle_of_a_file_counts_lines_from_the_file():
    text = CORPUS["volcanoes.txt"]
    start = text.index("Katla")
    hit = hit_of("volcanoes.txt", text, start)
    assert hit.chunk.start_line == line_of(text, "Katla")
    [citation] = build_citations("Katla erupted in 1918 [1].", [1], [hit], {"volcanoes.txt": text}.get)
    assert citation.start_line == line_of(text, "Katla")
    assert citation.verified


def test_a_tampered_file_makes_the_citation_unverified():
    original = CORPUS["volcanoes.txt"]
    hit = hit_of("volcanoes.txt", original)
    tampered = original.replace("last erupted in 1918", "last erupted in 1823")
    answer = "Katla last erupted in 1918 [1]."
    [ok] = build_citations(answer, [1], [hit], {"volcanoes.txt": original}.get)
    [bad] = build_citations(answer, [1], [hit], {"volcanoes.txt": tampered}.get)
    [gone] = build_citations(answer, [1], [hit], {}.get)
    assert ok.verified
    assert not bad.verified
    assert not gone.verified
    # the same quote moved to other lines no longer verifies either
    shifted = "New first line.\n" + original
    [moved] = build_citations(answer, [1], [hit], {"volcanoes.txt": shifted}.get)
    assert not moved.verified


# -- attribute ----------------------------------------------------------------------------------------
def test_attribute_adds_the_marker_of_the_supporting_passage():
    hits = [
        hit_of("bread.md", "A sourdough starter needs flour and water fed every day."),
        hit_of("volcanoes.txt", "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918.", rank=2),
    ]
    answer = "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918. Penguins cannot fly."
    attributed = attribute(answer, hits, HashingEmbedder())
    text, markers = parse_markers(attributed, len(hits))
    assert markers == [2]
    assert text.startswith("Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918. [2]")
    assert text.endswith("Penguins cannot fly.")
    [citation] = build_citations(text, markers, hits, {"volcanoes.txt": hits[1].chunk.text}.get)
    assert citation.source == "volcanoes.txt" and citation.verified


def test_attribute_without_embedder_or_passages_changes_nothing():
    hits = [hit_of("bread.md", CORPUS["bread.md"])]
    assert attribute("Some claim.", hits, None) == "Some claim."
    assert attribute("Some claim.", [], HashingEmbedder()) == "Some claim."


def test_attribute_finds_a_claim_inside_a_long_passage():
    # The supporting sentence is one of many in passage 1; passage 2 shares a few of its words.
    filler = " ".join(f"Unrelated remark number {n} mentions harbours, ferries and timetables." for n in range(12))
    long_passage = f"{filler} Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918. {filler}"
    hits = [
        hit_of("long.txt", long_passage),
        hit_of("other.txt", "Katla is a word with many meanings.", rank=2),
    ]
    claim = "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918."
    assert parse_markers(attribute(claim, hits, HashingEmbedder()), 2)[1] == [1]


# -- correct_markers --------------------------------------------------------------------------------
VOLCANO = "Hekla erupted in 1947 and again in 2000.\n"
RIVER = "Vienna and Budapest both stand on the Danube.\n"
TOWNS = "Akureyri lies on a fjord in the north of Iceland.\n"


def passages3() -> list[Hit]:
    return [hit_of("volcanoes.txt", VOLCANO), hit_of("rivers.txt", RIVER, rank=2), hit_of("towns.txt", TOWNS, rank=3)]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # the claim is passage 2's, the model cited 3: re-pointed, with the marker where it was
        ("Vienna and Budapest stand on the Danube [3].", "Vienna and Budapest stand on the Danube [2]."),
        ("Vienna and Budapest stand on the Danube. [3]", "Vienna and Budapest stand on the Danube. [2]"),
        # only the wrong sentence changes
        ("Hekla erupted in 1947 [1]. Budapest stands on the Danube [1].",
         "Hekla erupted in 1947 [1]. Budapest stands on the Danube [2]."),
        # right markers are left alone, and so is one of several when any of them supports it
        ("Hekla erupted in 2000 [1].", "Hekla erupted in 2000 [1]."),
        ("Hekla erupted in 2000 [3][1].", "Hekla erupted in 2000 [3][1]."),
        # no passage clearly supports the claim: the model's marker stands
        ("Iceland has many glaciers [2].", "Iceland has many glaciers [2]."),
        # an answer without markers is not this function's business
        ("Vienna stands on the Danube.", "Vienna stands on the Danube."),
    ],
)
def test_correct_markers_repoints_only_clearly_misplaced_markers(answer, expected):
    assert correct_markers(answer, passages3(), HashingEmbedder(256)) == expected


def test_correct_markers_needs_an_embedder_and_passages():
    assert correct_markers("Vienna stands on the Danube [3].", passages3(), None) == "Vienna stands on the Danube [3]."
    assert correct_markers("Vienna stands on the Danube [3].", [], HashingEmbedder(256)) == "Vienna stands on the Danube [3]."


# -- supported ----------------------------------------------------------------------------------------
def test_supported_says_which_claims_some_passage_backs():
    hits = [
        hit_of("bread.md", "A sourdough starter needs flour and water fed every day."),
        hit_of("volcanoes.txt", "Katla lies beneath the Myrdalsjokull glacier and last erupted in 1918.", rank=2),
    ]
    claims = ["Katla last erupted in 1918.", "Penguins cannot fly.", "Myrdalsjokull"]
    assert supported(claims, hits, HashingEmbedder()) == [True, False, True]
    assert supported(claims, [], HashingEmbedder()) == [False, False, False]
