"""Contextual headers: each chunk knows the title and the heading (a section, a commenter's name
line) it sits under; the header is embedded and searched with the chunk, shown to a model as
context, and never part of the chunk's text or of a quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag import faiss_folder as store, loaders
from rag.chunking import Chunker, Headers, embedding_text
from rag.embedding import HashingEmbedder
from rag.errors import IndexMismatchError
from rag.indexer import CHUNKING_KEY, build_index
from rag.pipeline import Rag
from rag.text import heading_lines
from rag.types import Document

from fakes import scripted, write_corpus  # noqa: F401

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"

THREAD = (
    "Discussion about this post\n"
    "\n"
    "User's avatar\n"
    "Leon Liao's avatar\n"
    "\n"
    "Markets are splitting into separate blocs. Chips and frontier models are becoming strategic "
    "assets. Open models still travel across borders. Developers keep mixing tools from both sides. "
    "Hardware makers adapt to several stacks at once. The competition resembles a new Cold War in "
    "technology. Cloud providers pick their regions carefully. Investors screen deals for security "
    "risks.\n"
    "\n"
    "Mara Quist's avatar\n"
    "\n"
    "Orchards in the valley bloom early this year. The harvest festival moves to August.\n"
)

ARTICLE = (
    "Chinese Models\n"
    "DeepSeek:\n"
    "A lab founded by a hedge fund in Hangzhou. It trains large language models at a low cost "
    "with careful engineering.\n"
    "Alibaba's Qwen:\n"
    "A family of models released by a cloud company. Its open-weight versions cover many languages "
    "and tasks.\n"
)
COMMENT_HEADER = "Discussion about this post > Leon Liao's avatar"


def _doc(text: str, path: str = "x.txt") -> Document:
    return Document(path=path, text=text, content_hash=loaders.content_hash(text.encode()), kind="txt")


def _chunk_with(chunks, words: str):
    return next(c for c in chunks if words in c.text)


# -- finding headers ---------------------------------------------------------------------------------
def test_a_comment_carries_the_name_line_above_it_and_the_page_title() -> None:
    doc = _doc(THREAD)
    chunks = Chunker(40, 0, fits=HashingEmbedder().fits).split(doc)
    cold_war = _chunk_with(chunks, "Cold War")
    assert "Leon Liao" not in cold_war.text  # the name is above the chunk, not in it
    assert cold_war.header == COMMENT_HEADER
    assert _chunk_with(chunks, "Orchards").header == "Discussion about this post > Mara Quist's avatar"
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.start_char : chunk.end_char]


def test_a_paragraph_carries_the_heading_above_it() -> None:
    chunks = Chunker(20, 0).split(_doc(ARTICLE))
    low_cost, open_weight = _chunk_with(chunks, "low cost"), _chunk_with(chunks, "open-weight")
    assert "DeepSeek" not in low_cost.text and "Qwen" not in open_weight.text
    assert low_cost.header == "Chinese Models > DeepSeek"
    assert open_weight.header == "Chinese Models > Alibaba's Qwen"


def test_the_seed_comment_is_under_its_writer() -> None:
    [doc] = [d for d in loaders.load_documents(SEEDS_DIR) if d.path == "000_2cc7a2ca98addbf3.txt"]
    chunks = Chunker(180, 30, fits=HashingEmbedder().fits).split(doc)
    later = [c for c in chunks if c.start_char > doc.text.index("AI competition")]
    assert later and all(c.header == COMMENT_HEADER for c in later[:-1])


def test_lines_wrapped_mid_sentence_are_not_headings() -> None:
    text = (
        "Floods in the Valley\n"
        "The river rose quickly after the storm and\n"
        "Flooded the lower town within hours, as the\n"
        "gauges upstream had warned.\n"
        "Relief Efforts\n"
        "Volunteers filled sandbags.\n"
    )
    assert [text[s:e] for s, e in heading_lines(text)] == ["Floods in the Valley", "Relief Efforts"]


def test_a_header_is_at_most_twenty_words() -> None:
    title = "One two three four five six seven eight nine ten eleven"
    heading = "Alpha beta gamma delta epsilon zeta eta theta iota kappa"
    text = f"{title}\n\nText of the intro.\n\n{heading}\n\nThe body of the section.\n"
    headers = Headers(text)
    assert headers.at(0) == ""  # a slice that starts with the title says it already
    assert headers.at(text.index("Text of")) == title
    assert headers.at(text.index(heading)) == title
    assert headers.at(text.index("The body")) == heading  # both would be 21 words: the nearer one alone
    assert len(Headers(f"Short title\n\n{heading}\n\nBody.\n").at(40).split()) <= 20


def test_the_model_limit_holds_for_header_and_text() -> None:
    fits = HashingEmbedder(max_tokens=40).fits
    heading = "The Long Heading Of This Section About Rivers And Lakes"
    body = " ".join(f"Sentence number {i} talks about water." for i in range(40))
    chunks = Chunker(400, 0, fits=fits).split(_doc(f"{heading}\n\n{body}\n"))
    assert len(chunks) > 1 and chunks[0].text.startswith(heading) and chunks[0].header == ""
    for chunk in chunks[1:]:
        assert chunk.header == heading
        assert fits(embedding_text(chunk)), chunk.text


# -- embedded and searched, never quoted ------------------------------------------------------------
@pytest.fixture
def thread_rag(make_settings, in_tmp, scripted):  # noqa: F811
    write_corpus(in_tmp / "seeds", {"thread.txt": THREAD, "article.txt": ARTICLE})
    rag = Rag(make_settings(chunk_tokens=40, chunk_overlap=0, generator="scripted", retrieval_mode="bm25"))
    rag.index()
    return rag


def test_the_embedder_reads_the_header_above_the_text(make_settings, in_tmp, counting_embedder) -> None:
    write_corpus(in_tmp / "seeds", {"thread.txt": THREAD})
    build_index(make_settings(chunk_tokens=40, chunk_overlap=0), embedder=counting_embedder)
    embedded = [text for batch in counting_embedder.calls for text in batch]
    assert any(t.startswith(COMMENT_HEADER + "\n") and "Cold War" in t for t in embedded)


def test_a_question_naming_the_writer_finds_the_comment_by_words(thread_rag) -> None:
    hits = thread_rag.retrieve("What does Leon Liao say?", top_k=5)
    under = [h for h in hits if h.chunk.header == COMMENT_HEADER]
    assert under and all("Liao" not in h.chunk.text for h in under)
    assert {h.chunk.source for h in hits} == {"thread.txt"}  # the article never mentions him


def test_the_header_is_never_quoted(thread_rag, scripted) -> None:  # noqa: F811
    scripted.enqueue("Leon Liao compares it to a new Cold War in technology [1].")
    answer = thread_rag.ask("What does Leon Liao say about the Cold War?")
    assert answer.citations and answer.passages[0].chunk.header == COMMENT_HEADER
    for citation in answer.citations:
        assert "avatar" not in citation.quote and "Discussion" not in citation.quote
    request = scripted.requests[-1]
    prompt = request.messages[1].content
    assert f'under "{COMMENT_HEADER}"' in prompt
    for line in prompt.splitlines():  # the passages' labels show the header; texts and highlights do not
        if "avatar" in line and not line.startswith("Passage ["):
            assert any(line in hit.chunk.text for hit in request.passages), line


# -- rebuilds ---------------------------------------------------------------------------------------
def test_an_index_chunked_before_headers_is_rebuilt(make_settings, seeds_copy, counting_embedder) -> None:
    settings = make_settings()
    first = build_index(settings, embedder=counting_embedder)
    folder = store.build_folder(settings.index_dir, store.current_build_name(settings.index_dir))
    manifest = json.loads((folder / store.MANIFEST).read_text())
    assert manifest["library_versions"][CHUNKING_KEY] == "2"
    del manifest["library_versions"][CHUNKING_KEY]  # as a build from before headers records it
    (folder / store.MANIFEST).write_text(json.dumps(manifest))
    counting_embedder.calls.clear()
    report = build_index(settings, embedder=counting_embedder)
    assert report.full_rebuild_reason == "the chunking changed (version 1 -> 2)"
    assert report.embedded_chunks == counting_embedder.texts_embedded == first.chunks
    assert any(c.header for c in store.load(settings.index_dir).chunks)


# -- PostgreSQL ------------------------------------------------------------------------------------
def _sql(url: str, statement: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def _to_format_1(url: str) -> None:
    """Make the database's tables what a build from before headers left."""
    _sql(url, "ALTER TABLE rag_chunks DROP COLUMN tsv")
    _sql(url, "ALTER TABLE rag_chunks DROP COLUMN header")
    _sql(url, "ALTER TABLE rag_chunks ADD COLUMN tsv tsvector "
              "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED")
    _sql(url, "UPDATE rag_schema SET version = 1")
    _sql(url, "UPDATE rag_builds SET manifest = jsonb_set(manifest - 'library_versions', "
              "'{schema_version}', '1') || '{\"library_versions\": {}}'")


@pytest.mark.integration
def test_postgres_tables_from_before_headers_are_brought_up_and_rebuilt(make_settings, in_tmp, pg_database) -> None:
    from rag.vectorstore import open_store

    write_corpus(in_tmp / "seeds", {"thread.txt": THREAD, "article.txt": ARTICLE})
    settings = make_settings(store="postgres", database_url=pg_database, chunk_tokens=40, chunk_overlap=0)
    build_index(settings)
    _to_format_1(pg_database)
    with pytest.raises(IndexMismatchError, match="format 1"):
        open_store(settings)
    report = build_index(settings)
    assert report.full_rebuild_reason == "the index format changed (1 -> 2)"
    assert report.embedded_chunks == report.chunks
    reader = open_store(settings)
    [(cid, _)] = reader.lexical_search("Quist", 1)
    [chunk] = reader.chunks([cid])
    assert "Orchards" in chunk.text and chunk.header == "Discussion about this post > Mara Quist's avatar"


# -- the real embedding model ------------------------------------------------------------------------
@pytest.mark.integration
def test_a_question_naming_a_commenter_finds_his_comment_in_the_seeds(make_settings, seeds_copy, real_embedder) -> None:
    from rag.faiss_store import FaissStore
    from rag.retrieval import Retriever

    settings = make_settings(embedding_model=real_embedder.model_id)
    build_index(settings, embedder=real_embedder)
    [top, *_] = Retriever(FaissStore.of(store.load(settings.index_dir)), real_embedder).search(
        "What does Leon Liao say about the Cold War?", top_k=5)
    # The part of his comment that never names him, found through the name line above it.
    assert top.chunk.source == "000_2cc7a2ca98addbf3.txt" and top.chunk.header == COMMENT_HEADER
    assert "Cold War" in top.chunk.text and "Liao" not in top.chunk.text
