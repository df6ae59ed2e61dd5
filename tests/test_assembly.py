"""The assemble stage's own economy: a draft's markers parsed once into claims that every step
reads, and one support table per answer, so the passages' sentences are embedded once."""

from __future__ import annotations

from collections import Counter

import pytest

from rag import citations
from rag.assembly import assemble
from rag.citations import Support, build_citations, cite, parse, repoint_markers
from rag.embedding import HashingEmbedder
from rag.text import sentences

from conftest import CountingEmbedder
from test_draft_check import FILES, PASSAGES, draft

# The model cites passage 1 for a claim only passage 2 holds, and leaves out a name the key
# sentence gives: marker correction re-points it, then the draft check completes it.
MISCITED = "Tencent and Baidu carve their own path [1]."


def passage_sentences() -> list[str]:
    return [" ".join(h.chunk.text[s:e].split()) for h in PASSAGES for s, e in sentences(h.chunk.text)]


def test_the_passages_sentences_are_embedded_once_per_answer(monkeypatch):
    embedder = CountingEmbedder(HashingEmbedder(256))
    asked: list[list[str]] = []
    similarities = Support.similarities

    def spy(self, claims):
        asked.append(list(claims))
        return similarities(self, claims)

    monkeypatch.setattr(Support, "similarities", spy)
    answer = assemble(draft(MISCITED), read_document=FILES.get, embedder=embedder)
    assert answer.text.startswith("Tencent and Baidu carve their own path [2].")  # re-pointed
    assert answer.fallback_reason is not None  # and checked against the key sentence
    assert len(asked) >= 2  # both steps compared the draft with the passages
    embedded = Counter(text for batch in embedder.calls for text in batch)
    assert passage_sentences() and all(embedded[s] == 1 for s in passage_sentences())
    # The draft check's claim is the correction's, spelt the same: not embedded again either.
    assert embedded["Tencent and Baidu carve their own path ."] == 1
    # The next answer over the same passages finds their sentences in the embedder's cache.
    embedder.calls.clear()
    complete = "Alibaba, Tencent and Baidu carve their own path [2]."
    assemble(draft(complete), read_document=FILES.get, embedder=embedder)
    assert not set(passage_sentences()) & {t for batch in embedder.calls for t in batch}


@pytest.mark.parametrize(("raw", "parses"), [("Alibaba, Tencent and Baidu carve their own path [2].", 1), (MISCITED, 3)])
def test_the_markers_are_parsed_once_per_text(monkeypatch, raw, parses):
    # Once for the draft, and again only for a text a step rewrote: the miscited draft is
    # re-pointed, then completed by the draft check.
    calls = Counter()
    for name in ("parse_markers", "split_claims"):
        original = getattr(citations, name)

        def counted(*args, _original=original, _name=name):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(citations, name, counted)
    assemble(draft(raw), read_document=FILES.get, embedder=HashingEmbedder(256))
    assert calls == {"parse_markers": parses, "split_claims": parses}


def test_the_steps_read_the_parsed_record_without_parsing_again(monkeypatch):
    marked = parse(MISCITED, len(PASSAGES))
    assert [(c.sentence, c.markers) for c in marked.claims] == [(MISCITED, (1,))]
    expected = build_citations(marked.text, marked.markers, PASSAGES, FILES.get)

    def no_parse(*args):
        raise AssertionError("parsed again")

    monkeypatch.setattr(citations, "parse_markers", no_parse)
    monkeypatch.setattr(citations, "split_claims", no_parse)
    assert cite(marked, PASSAGES, FILES.get) == expected
    support = Support(PASSAGES, HashingEmbedder(256))
    assert repoint_markers(marked, support) == "Tencent and Baidu carve their own path [2]."


def test_a_marker_after_the_full_stop_closes_the_sentence_before():
    marked = parse("[2] Katla erupted in 1918. [1] Hekla erupted in 1947 [1][2].", 2)
    first, second = marked.claims
    assert (first.sentence, first.opening, first.markers) == ("Katla erupted in 1918.", (2,), (1,))
    assert marked.text[first.start : first.end] == "[2] Katla erupted in 1918. [1]"
    assert (second.text, second.markers) == ("Hekla erupted in 1947 .", (1, 2))
