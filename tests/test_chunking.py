"""Chunking: token limits (tiktoken and the real model), sentence ends, overlap, exact spans."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from rag import loaders
from rag.chunking import Chunker, count_tokens, embedding_text
from rag.embedding import HashingEmbedder
from rag.types import Chunk, Document

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
SETTINGS = [(180, 30), (64, 16), (32, 0), (400, 100)]


def _doc(text: str, path: str = "x.txt") -> Document:
    return Document(path=path, text=text, content_hash=loaders.content_hash(text.encode()), kind="txt")


def _seed_documents() -> list[Document]:
    docs = [d for d in loaders.load_documents(SEEDS_DIR) if isinstance(d, Document)]
    assert len(docs) == len([p for p in SEEDS_DIR.iterdir() if p.is_file()]) >= 5
    return docs


def _short_sentences(n: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    words = "river stone cloud maple lantern copper violet harbor meadow signal".split()
    return " ".join(
        " ".join(rnd.choice(words) for _ in range(rnd.randint(3, 7))).capitalize() + "." for _ in range(n)
    )


def _nasty_text() -> str:
    """Very long sentences, very long words, no-space scripts, emoji, URLs."""
    rnd = random.Random(7)
    parts = [
        " ".join(rnd.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(900)) + ".",
        "https://example.com/" + "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(4000)),
        "x" * 3000,
        "漢字の文章はスペースがありません。" * 120,
        "\U0001F600\U0001F389\U0001F680" * 300,
        " ".join(
            "".join(rnd.choice("bcdfghjklmnpqrstvwxz") for _ in range(rnd.randint(10, 40))) for _ in range(300)
        ),
        "Normal sentence after the noise. Another normal one follows it!",
    ]
    return "\n\n".join(parts)


def _check_exact_slices(doc: Document, chunks: list[Chunk]) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len({c.id for c in chunks}) == len(chunks)
    for chunk in chunks:
        assert chunk.source == doc.path
        assert chunk.text == doc.text[chunk.start_char : chunk.end_char]
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.tokens == count_tokens(chunk.text)


def _check_covers(doc: Document, chunks: list[Chunk]) -> None:
    covered = bytearray(len(doc.text))
    for chunk in chunks:
        covered[chunk.start_char : chunk.end_char] = b"\x01" * (chunk.end_char - chunk.start_char)
    missing = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
    assert not missing, f"text not in any chunk: {doc.text[missing[0]:missing[0] + 40]!r}"


def test_overlap_must_be_smaller_than_chunk() -> None:
    with pytest.raises(ValueError):
        Chunker(50, 50)


@pytest.mark.parametrize(("chunk_tokens", "overlap"), SETTINGS)
def test_seed_chunks_within_token_limit(chunk_tokens: int, overlap: int) -> None:
    fits = HashingEmbedder().fits
    chunker = Chunker(chunk_tokens, overlap, fits=fits)
    for doc in _seed_documents():
        chunks = chunker.split(doc)
        assert chunks
        _check_exact_slices(doc, chunks)
        _check_covers(doc, chunks)
        for chunk in chunks:
            assert count_tokens(chunk.text) <= chunk_tokens
            assert fits(embedding_text(chunk))  # what is embedded: the header too


@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(180, 30), (32, 4)])
def test_long_sentences_and_long_words_within_token_limit(chunk_tokens: int, overlap: int) -> None:
    doc = _doc(_nasty_text())
    fits = HashingEmbedder(max_tokens=64).fits
    chunks = Chunker(chunk_tokens, overlap, fits=fits).split(doc)
    _check_exact_slices(doc, chunks)
    _check_covers(doc, chunks)
    for chunk in chunks:
        assert count_tokens(chunk.text) <= chunk_tokens
        assert fits(embedding_text(chunk))
    assert chunks[-1].text.endswith("Another normal one follows it!")


@pytest.mark.integration
@pytest.mark.parametrize(("chunk_tokens", "overlap"), [(180, 30), (512, 64)])
def test_real_model_never_truncates(real_embedder, chunk_tokens: int, overlap: int) -> None:
    limit = real_embedder.max_tokens
    assert limit == 256
    chunker = Chunker(chunk_tokens, overlap, fits=real_embedder.fits)
    for doc in [*_seed_documents(), _doc(_nasty_text(), "nasty.txt")]:
        chunks = chunker.split(doc)
        _check_exact_slices(doc, chunks)
        _check_covers(doc, chunks)
        for chunk in chunks:
            assert count_tokens(chunk.text) <= chunk_tokens
            pieces = real_embedder.token_count(embedding_text(chunk))
            assert pieces <= limit, f"{doc.path} chunk {chunk.ordinal}: {pieces} word pieces"


def test_chunks_end_on_sentence_boundaries() -> None:
    text = _short_sentences(200)
    doc = _doc(text)
    chunks = Chunker(60, 12).split(doc)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.text.endswith("."), chunk.text[-30:]
        assert chunk.end_char == len(text) or text[chunk.end_char] == " "
        assert chunk.text[0].isupper()
        assert chunk.start_char == 0 or text[chunk.start_char - 2 : chunk.start_char] == ". "


def test_seed_chunks_end_at_sentence_or_line_end() -> None:
    chunker = Chunker(180, 30, fits=HashingEmbedder().fits)
    for doc in _seed_documents():
        for chunk in chunker.split(doc):
            end = chunk.end_char
            at_line_end = end == len(doc.text) or doc.text[end] == "\n"
            after_sentence = doc.text[end - 1] in ".!?\"'\u201d\u2019)" and doc.text[end : end + 1].isspace()
            assert at_line_end or after_sentence, f"{doc.path}: ...{chunk.text[-40:]!r}"


def test_paragraph_end_preferred() -> None:
    para = " ".join(f"Sentence {w} of the first paragraph." for w in "one two three four five six".split())
    text = para + "\n\n" + _short_sentences(40)
    chunks = Chunker(80, 0).split(_doc(text))
    assert chunks[0].end_char == len(para)


def test_neighbours_overlap() -> None:
    doc = _doc(_short_sentences(300, seed=3))
    overlap = 24
    chunks = Chunker(96, overlap).split(doc)
    assert len(chunks) > 10
    for a, b in zip(chunks, chunks[1:]):
        assert a.start_char < b.start_char < a.end_char < b.end_char
        shared = doc.text[b.start_char : a.end_char]
        assert 0 < count_tokens(shared) <= overlap + 2  # +2: the spaces joining whole sentences


def test_no_overlap_when_zero() -> None:
    doc = _doc(_short_sentences(200, seed=4))
    chunks = Chunker(64, 0).split(doc)
    for a, b in zip(chunks, chunks[1:]):
        assert a.end_char < b.start_char
        assert doc.text[a.end_char : b.start_char].isspace()


def test_no_chunk_is_a_suffix_of_its_predecessor() -> None:
    # Short sentences, then one that fills most of a chunk: carrying the overlap in front of it
    # would not fit, and the chunker used to emit shrinking copies of the previous chunk's tail.
    short = " ".join(f"Short sentence number {i} here." for i in range(8))
    long = " ".join(["The long sentence goes on"] * 8) + "."
    doc = _doc(short + " " + long + " " + short)
    chunks = Chunker(50, 30).split(doc)
    _check_covers(doc, chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert b.end_char > a.end_char, f"chunk {b.ordinal} adds nothing after chunk {a.ordinal}"
        assert b.start_char > a.start_char
    for doc in _seed_documents():
        chunks = Chunker(180, 30, fits=HashingEmbedder().fits).split(doc)
        for a, b in zip(chunks, chunks[1:]):
            assert b.end_char > a.end_char


def _file_lines(path: Path) -> list[str]:
    return loaders.decode_text(path.read_bytes()).split("\n")


def _check_line_spans(doc: Document, chunks: list[Chunk], lines: list[str]) -> None:
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)
        span = "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.text in span
        first, *_, last = chunk.text.split("\n") if "\n" in chunk.text else (chunk.text, chunk.text)
        assert first in lines[chunk.start_line - 1]
        assert last in lines[chunk.end_line - 1]
        assert chunk.end_line - chunk.start_line == chunk.text.count("\n")


@pytest.mark.parametrize(("chunk_tokens", "overlap"), SETTINGS)
def test_line_spans_of_every_seed_chunk(chunk_tokens: int, overlap: int) -> None:
    chunker = Chunker(chunk_tokens, overlap, fits=HashingEmbedder().fits)
    for doc in _seed_documents():
        lines = _file_lines(SEEDS_DIR / doc.path)
        chunks = chunker.split(doc)
        _check_exact_slices(doc, chunks)
        _check_line_spans(doc, chunks, lines)


def test_line_spans_with_crlf_and_blank_lines(tmp_path: Path) -> None:
    rnd = random.Random(11)
    raw_lines = ["", "", "   "]
    for i in range(120):
        kind = rnd.random()
        if kind < 0.2:
            raw_lines.append("")
        elif kind < 0.3:
            raw_lines.append(" \t ")
        else:
            raw_lines.append(f"Line {i} says " + _short_sentences(rnd.randint(1, 4), seed=i) + "  ")
    data = ("\r\n".join(raw_lines[:60]) + "\r" + "\n".join(raw_lines[60:])).encode("utf-8")
    path = tmp_path / "crlf.txt"
    path.write_bytes(data)
    doc = loaders.load(loaders.SourceFile("crlf.txt", path))
    assert "\r" not in doc.text
    lines = _file_lines(path)
    assert lines == raw_lines  # line numbers are what an editor shows for the file on disk
    for chunk_tokens, overlap in SETTINGS:
        chunks = Chunker(chunk_tokens, overlap).split(doc)
        _check_exact_slices(doc, chunks)
        _check_covers(doc, chunks)
        _check_line_spans(doc, chunks, lines)
        for chunk in chunks:
            assert lines[chunk.start_line - 1].strip() and lines[chunk.end_line - 1].strip()


def test_chunk_ids_deterministic_and_content_dependent() -> None:
    text = _short_sentences(100, seed=5)
    chunker = Chunker(64, 8)
    first = chunker.split(_doc(text))
    again = chunker.split(_doc(text))
    assert [c.id for c in first] == [c.id for c in again]
    changed = chunker.split(_doc(text + " One more sentence."))
    assert first[0].id != changed[0].id  # ids change with the file's content hash
    moved = chunker.split(_doc(text, path="other.txt"))
    assert not {c.id for c in first} & {c.id for c in moved}


def test_empty_and_whitespace_documents_give_no_chunks() -> None:
    for text in ("", "   ", "\n\n\n", " \t\n \n"):
        assert Chunker(64, 8).split(_doc(text)) == []
