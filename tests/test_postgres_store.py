"""PostgresStore against a real PostgreSQL 18 + pgvector server (tests/pg_server.py), never mocked.

Each test gets a database of its own on the session's server; the replica test adds a streaming
replica of that server. Builds go through `rag.indexer.build_index` with RAG_STORE=postgres.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import store_contract
from fakes import CORPUS, write_corpus

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_settings(make_settings, pg_database):
    """Settings for a seeds folder under tmp_path indexed into this test's database."""

    def make(**overrides: object):
        values: dict[str, object] = {"store": "postgres", "database_url": pg_database}
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def corpus_settings(pg_settings, in_tmp):
    write_corpus(in_tmp / "seeds")
    return pg_settings()


def _build(settings, **kwargs):
    from rag.indexer import build_index

    return build_index(settings, **kwargs)


def _reader(settings):
    from rag.vectorstore import open_store

    return open_store(settings)


def _sql(url: str, statement: str, params=()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def _entries(paths_texts: dict[str, str], tag: str):
    """Chunks, vectors and manifest documents for one chunk per file (the hashing embedder)."""
    from rag.embedding import HashingEmbedder
    from rag.types import Chunk, DocumentEntry

    chunks, documents = [], {}
    for path, text in paths_texts.items():
        chunk = Chunk(
            id=f"{tag}-{path}", source=path, ordinal=0, text=text, start_char=0, end_char=len(text),
            start_line=1, end_line=1, tokens=len(text.split()),
        )
        chunks.append(chunk)
        documents[path] = DocumentEntry(path=path, content_hash=f"{tag}-{path}", chunk_ids=[chunk.id], kind="txt")
    return chunks, HashingEmbedder(256).embed([c.text for c in chunks]), documents


def _fields(documents) -> dict:
    return {
        "embedding_model": "hashing-256", "dimension": 256, "max_model_tokens": 256, "chunk_tokens": 180,
        "chunk_overlap": 30, "tokenizer": "cl100k_base", "documents": documents, "library_versions": {},
    }


def _write_build(url: str, paths_texts: dict[str, str], tag: str, **store_options) -> None:
    """Replace every document with one chunk per file, as one committed build."""
    from rag.postgres import PostgresStore

    chunks, vectors, documents = _entries(paths_texts, tag)
    with PostgresStore(url, writable=True, **store_options) as writer:
        writer.delete_documents(writer.manifest().documents if writer.current_build() else ())
        writer.add(chunks, vectors)
        writer.commit(_fields(documents))


# -- the protocol ------------------------------------------------------------------------------
@pytest.fixture(params=["vector", "halfvec"])
def open_pg(request, make_settings, pg_database):
    """The contract's `open_store` for this test's database, with full or half-precision vectors."""
    from rag.vectorstore import open_store

    def open_(*, writable: bool = False, check: bool = True, **overrides: object):
        values: dict[str, object] = {
            "store": "postgres",
            "database_url": pg_database,
            "embedding_model": store_contract.MODEL,
            "pg_vector_type": request.param,
        }
        values.update(overrides)
        return open_store(make_settings(**values), writable=writable, check=check)

    return open_


@pytest.mark.parametrize("check", store_contract.CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_postgres_store_contract(open_pg, check) -> None:
    check(open_pg)


def test_indexed_chunks_come_back_whole_and_are_found_by_vector_and_by_words(corpus_settings, in_tmp):
    from rag.embedding import HashingEmbedder
    from rag.loaders import document_text
    from rag.vectorstore import ReadableStore

    report = _build(corpus_settings)
    assert sorted(report.added) == sorted(CORPUS) and report.wrote
    store = _reader(corpus_settings)
    assert isinstance(store, ReadableStore)
    manifest = store.manifest()
    assert sorted(manifest.documents) == sorted(CORPUS)
    assert manifest.embedding_model == "hashing-256" and manifest.dimension == 256
    assert manifest.chunk_count == report.chunks == store.stats().chunks
    assert manifest.index_kind == "hnsw" and manifest.library_versions["pgvector-extension"] == "0.8.6"

    ids = [cid for entry in manifest.documents.values() for cid in entry.chunk_ids]
    chunks = store.chunks(list(reversed(ids)))
    assert [c.id for c in chunks] == list(reversed(ids))
    for chunk in chunks:  # every field survives the round trip: the text is the file's exact slice
        assert chunk.text == document_text(in_tmp / "seeds", chunk.source)[chunk.start_char : chunk.end_char]
    embedder = HashingEmbedder(256)
    np.testing.assert_allclose(store.vectors(ids), embedder.embed([c.text for c in store.chunks(ids)]), atol=1e-6)
    with pytest.raises(KeyError):
        store.chunks(["no-such-chunk"])

    query = embedder.embed(["Which volcano erupted in 1947?"])[0]
    best, score = store.search(query, 3)[0]
    assert store.chunks([best])[0].source == "volcanoes.txt"
    assert score == pytest.approx(float(store.vectors([best])[0] @ query), abs=1e-5)
    words = store.lexical_search("Danube countries", 5)
    assert words and store.chunks([words[0][0]])[0].source == "notes/rivers.txt"
    assert store.lexical_search("the of and", 5) == []  # stop words only: nothing, not an error
    stats = store.stats()
    assert (stats.kind, stats.index_kind, stats.documents) == ("postgres", "hnsw", 3)
    assert stats.parameters["m"] == 16 and stats.build == str(_sql(
        corpus_settings.database_url.get_secret_value(), "SELECT id FROM rag_builds WHERE is_current")[0][0])


def test_hybrid_search_is_the_reciprocal_rank_fusion_of_both_searches(corpus_settings):
    from rag.embedding import HashingEmbedder
    from rag.vectorstore import fuse

    _build(corpus_settings)
    store = _reader(corpus_settings)
    for question in ("Which volcano erupted in 1947?", "bread dough baking", "Vienna Budapest Danube"):
        qvec = HashingEmbedder(256).embed([question])[0]
        depth = 20
        expected = fuse(store.search(qvec, depth), store.lexical_search(question, depth), "hybrid")[:depth]
        hits = store.hybrid_search(qvec, question, depth)
        assert [h.chunk.id for h in hits] == [cid for cid, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
        lexical = dict(store.lexical_search(question, depth))
        for hit in hits:
            assert hit.dense_score == pytest.approx(float(store.vectors([hit.chunk.id])[0] @ qvec), abs=1e-5)
            assert hit.bm25_score == (pytest.approx(lexical[hit.chunk.id], abs=1e-6) if hit.chunk.id in lexical else None)


@pytest.mark.parametrize(
    "text",
    ["'); DROP TABLE rag_chunks; --", "volcano' OR '1'='1", "Hekla\x00; DELETE FROM rag_documents", '"unclosed -not OR'],
)
def test_query_text_reaches_the_server_as_a_value_never_as_sql(corpus_settings, text):
    from rag.embedding import HashingEmbedder

    _build(corpus_settings)
    url = corpus_settings.database_url.get_secret_value()
    before = _sql(url, "SELECT (SELECT count(*) FROM rag_chunks), (SELECT count(*) FROM rag_documents)")
    store = _reader(corpus_settings)
    qvec = HashingEmbedder(256).embed([text])[0]
    assert len(store.hybrid_search(qvec, text, 5)) >= 1  # the vector half still answers
    store.lexical_search(text, 5)
    assert _sql(url, "SELECT (SELECT count(*) FROM rag_chunks), (SELECT count(*) FROM rag_documents)") == before


def test_the_retriever_uses_the_one_query_hybrid_search(corpus_settings):
    from rag.embedding import HashingEmbedder
    from rag.retrieval import Retriever

    _build(corpus_settings)
    store = _reader(corpus_settings)
    calls = []
    original = store.hybrid_search
    store.hybrid_search = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    hits = Retriever(store, HashingEmbedder(256)).search("When did Katla last erupt?", top_k=2)
    assert len(calls) == 1 and hits[0].chunk.source == "volcanoes.txt" and hits[0].rank == 1
    dense = Retriever(store, HashingEmbedder(256)).search("When did Katla last erupt?", top_k=2, mode="dense")
    assert dense[0].chunk.source == "volcanoes.txt" and len(calls) == 1


def test_the_index_handle_serves_every_chunk_of_the_newest_build(corpus_settings, in_tmp):
    from rag.embedding import HashingEmbedder
    from rag.index_handle import IndexHandle

    _build(corpus_settings)
    handle = IndexHandle(corpus_settings, lambda: HashingEmbedder(256))
    store = handle.retriever().store
    manifest = store.manifest()
    chunks = handle.chunks()
    assert [c.id for c in chunks] == [cid for entry in manifest.documents.values() for cid in entry.chunk_ids]
    assert chunks == store.chunks([c.id for c in chunks]) and handle.chunks() is chunks  # read once per build
    assert handle.build == store.current_build()

    (in_tmp / "seeds" / "tea.txt").write_text("Green tea steeps for two minutes.\n", encoding="utf-8")
    _build(corpus_settings)
    handle.refresh()
    assert handle.retriever().store is store  # a database store serves its newest build: never reopened
    assert handle.build == store.current_build() and "tea.txt" in {c.source for c in handle.chunks()}


def _readers_connected(url: str, *, expect: int | None = None, settle: float = 5.0) -> int:
    """How many pooled read connections (`rag`) the database has (waiting for `expect`)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rag' AND datname = current_database()"
    deadline = time.monotonic() + settle
    while (count := _sql(url, query)[0][0]) != expect and expect is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # a closed connection's server process takes a moment to exit
    return count


def test_reads_and_snapshots_borrow_from_one_bounded_pool(pg_database):
    from rag.embedding import HashingEmbedder
    from rag.postgres import PostgresStore
    from rag.postgres.connection import POOL_SIZE
    from rag.retrieval import Retriever

    _write_build(pg_database, {f"d{i}.txt": f"volcano ash number {i}" for i in range(8)}, "v1")
    reader = PostgresStore(pg_database)
    retriever = Retriever(reader, HashingEmbedder(256))
    for mode in ("dense", "bm25", "hybrid") * 3:  # dense and bm25 read in a snapshot each time
        assert retriever.search("volcano ash", top_k=2, mode=mode)
    assert _readers_connected(pg_database, expect=1) == 1  # every read went back to the pool

    peak, stop = [], threading.Event()

    def search() -> None:
        while not stop.is_set():
            retriever.search("volcano ash", top_k=2, mode="dense")

    threads = [threading.Thread(target=search) for _ in range(POOL_SIZE + 4)]
    for thread in threads:
        thread.start()
    for _ in range(10):
        peak.append(_readers_connected(pg_database))
    stop.set()
    for thread in threads:
        thread.join()
    assert 1 <= max(peak) <= POOL_SIZE  # more threads than connections: they wait their turn
    reader.close()
    assert _readers_connected(pg_database, expect=0) == 0


# -- builds --------------------------------------------------------------------------------------
def test_incremental_rebuild_rewrites_only_what_changed(corpus_settings, in_tmp, counting_embedder):
    url = corpus_settings.database_url.get_secret_value()
    _build(corpus_settings, embedder=counting_embedder)
    first = counting_embedder.texts_embedded
    build_of = dict(_sql(url, "SELECT path, build FROM rag_documents"))
    rivers_ids = _reader(corpus_settings).manifest().documents["notes/rivers.txt"].chunk_ids

    report = _build(corpus_settings, embedder=counting_embedder)
    assert not report.wrote and counting_embedder.texts_embedded == first  # nothing changed

    (in_tmp / "seeds" / "bread.md").write_text("# Rye bread\n\nRye bread is dense and sour.\n", encoding="utf-8")
    (in_tmp / "seeds" / "volcanoes.txt").unlink()
    (in_tmp / "seeds" / "tea.txt").write_text("Green tea steeps for two minutes.\n", encoding="utf-8")
    report = _build(corpus_settings, embedder=counting_embedder)
    assert (report.added, report.changed, report.removed) == (["tea.txt"], ["bread.md"], ["volcanoes.txt"])
    assert counting_embedder.calls[-1] == ["# Rye bread\n\nRye bread is dense and sour.", "Green tea steeps for two minutes."]

    store = _reader(corpus_settings)
    manifest = store.manifest()
    assert sorted(manifest.documents) == ["bread.md", "notes/rivers.txt", "tea.txt"]
    assert manifest.documents["notes/rivers.txt"].chunk_ids == rivers_ids
    builds = dict(_sql(url, "SELECT path, build FROM rag_documents"))
    assert builds["notes/rivers.txt"] == build_of["notes/rivers.txt"]  # untouched row
    assert builds["bread.md"] > build_of["bread.md"] and builds["tea.txt"] == builds["bread.md"]
    assert _sql(url, "SELECT count(*) FROM rag_chunks WHERE document = 'volcanoes.txt'") == [(0,)]
    assert _sql(url, "SELECT count(*) FROM rag_chunks")[0][0] == manifest.chunk_count == report.chunks
    assert _sql(url, "SELECT count(*) FROM rag_builds WHERE is_current") == [(1,)]
    assert store.lexical_search("Hekla", 5) == [] and store.lexical_search("rye", 5)


def _builders(url: str, *, settle: float = 5.0) -> int:
    """How many builder connections (`rag-index`) the database still has, once closed ones left."""
    query = ("SELECT count(*) FROM pg_stat_activity "
             "WHERE application_name = 'rag-index' AND datname = current_database()")
    deadline = time.monotonic() + settle
    while (count := _sql(url, query)[0][0]) and time.monotonic() < deadline:
        time.sleep(0.05)  # a closed connection's server process takes a moment to exit
    return count


def test_a_build_lets_go_of_its_transaction_and_lock_however_it_ends(corpus_settings, in_tmp):
    from rag.embedding import HashingEmbedder
    from rag.errors import EmbeddingError
    from rag.postgres import PostgresStore

    class FailingEmbedder(HashingEmbedder):
        def embed(self, texts, **kwargs):
            raise EmbeddingError("the embedding model stopped")

    url = corpus_settings.database_url.get_secret_value()
    _build(corpus_settings)
    assert not _build(corpus_settings).wrote and _builders(url) == 0  # nothing to do: nothing held
    (in_tmp / "seeds" / "tea.txt").write_text("Green tea steeps for two minutes.\n", encoding="utf-8")
    with pytest.raises(EmbeddingError) as caught:
        _build(corpus_settings, embedder=FailingEmbedder(256))
    # The error (and so the failed build's frames) is still held here: its store was closed anyway.
    assert caught.traceback and _builders(url) == 0
    with PostgresStore(url, writable=True, lock_timeout=0.5) as next_builder:
        next_builder.begin()  # the lock is free at once
    assert _build(corpus_settings).added == ["tea.txt"]


def test_the_index_format_compared_is_the_store_s_own(corpus_settings, monkeypatch):
    from rag import faiss_folder as faiss_files
    from rag.postgres import PostgresStore

    _build(corpus_settings)
    monkeypatch.setattr(faiss_files, "SCHEMA_VERSION", faiss_files.SCHEMA_VERSION + 6)
    assert not _build(corpus_settings).wrote  # the FAISS files' format is not this store's
    built = PostgresStore.schema_version
    monkeypatch.setattr(PostgresStore, "schema_version", built + 1)
    report = _build(corpus_settings)
    assert report.wrote and report.full_rebuild_reason == f"the index format changed ({built} -> {built + 1})"


def test_another_embedding_model_is_refused_for_reading_and_rebuilt_from_scratch(corpus_settings, pg_settings):
    from rag.errors import IndexMismatchError
    from rag.vectorstore import open_store

    _build(corpus_settings)
    other = pg_settings(embedding_model="hashing-128")
    with pytest.raises(IndexMismatchError) as caught:
        open_store(other)
    message = str(caught.value)
    assert "hashing-256" in message and "RAG_EMBEDDING_MODEL" in message and "rag index" in message

    report = _build(other)  # a full rebuild: the column becomes vector(128)
    assert report.full_rebuild_reason and "embedding model" in report.full_rebuild_reason
    store = open_store(other)
    assert store.stats().dimension == 128 and store.manifest().dimension == 128
    url = other.database_url.get_secret_value()
    assert _sql(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     "WHERE attrelid = 'rag_chunks'::regclass AND attname = 'embedding'") == [("vector(128)",)]
    with pytest.raises(IndexMismatchError):
        open_store(corpus_settings)


def test_halfvec_halves_the_vectors_and_a_type_change_converts_them(pg_settings, in_tmp):
    from rag.embedding import HashingEmbedder

    write_corpus(in_tmp / "seeds")
    half = pg_settings(pg_vector_type="halfvec")
    _build(half)
    url = half.database_url.get_secret_value()
    column = ("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
              "WHERE attrelid = 'rag_chunks'::regclass AND attname = 'embedding'")
    assert _sql(url, column) == [("halfvec(256)",)]
    store = _reader(half)
    qvec = HashingEmbedder(256).embed(["Hekla volcano erupted"])[0]
    for cid, score in store.search(qvec, 5):
        exact = float(HashingEmbedder(256).embed([store.chunks([cid])[0].text])[0] @ qvec)
        assert score == pytest.approx(exact, abs=2e-3)
    assert store.stats().parameters["vector_type"] == "halfvec"

    (in_tmp / "seeds" / "tea.txt").write_text("Green tea steeps for two minutes.\n", encoding="utf-8")
    _build(pg_settings(pg_vector_type="vector", pg_hnsw_m=8))  # incremental: old rows converted
    assert _sql(url, column) == [("vector(256)",)]
    assert _sql(url, "SELECT reloptions FROM pg_class WHERE relname = 'rag_chunks_embedding'") == [
        (["m=8", "ef_construction=64"],)
    ]
    assert _reader(pg_settings()).stats().chunks == 4


# -- one builder, many readers -----------------------------------------------------------------
def test_a_second_builder_waits_for_the_first_then_gets_index_locked(pg_database):
    from rag.errors import IndexLockedError
    from rag.postgres import PostgresStore

    _write_build(pg_database, {"a.txt": "alpha"}, "v1")
    first = PostgresStore(pg_database, writable=True)
    first.begin()
    started = time.monotonic()
    with pytest.raises(IndexLockedError) as caught:
        PostgresStore(pg_database, writable=True, lock_timeout=0.5).begin()
    assert time.monotonic() - started >= 0.45
    assert "build lock" in str(caught.value) and "wait for it or stop it" in str(caught.value)

    chunks, vectors, documents = _entries({"a.txt": "alpha two"}, "v2")
    first.delete_documents(["a.txt"])
    first.add(chunks, vectors)
    committer = threading.Timer(0.5, lambda: first.commit(_fields(documents)))
    committer.start()
    second = PostgresStore(pg_database, writable=True, lock_timeout=10)
    second.begin()  # waits for the first build's COMMIT, then sees it
    committer.join()
    assert second.manifest().documents["a.txt"].content_hash == "v2-a.txt"
    second.close()
    first.close()


def test_readers_see_the_old_build_or_the_new_never_a_mix(pg_database):
    from rag.embedding import HashingEmbedder
    from rag.postgres import PostgresStore

    old = {f"doc{i}.txt": f"alpha beta gamma shared words version one number {i}" for i in range(6)}
    new = {f"doc{i}.txt": f"alpha beta gamma shared words version two number {i}" for i in range(6)}
    _write_build(pg_database, old, "old")
    readers = [PostgresStore(pg_database), PostgresStore(pg_database)]
    qvec = HashingEmbedder(256).embed(["alpha beta gamma shared words"])[0]
    seen: list[list[set[str]]] = [[], []]
    stop = threading.Event()

    def read(n: int) -> None:
        while not stop.is_set():
            tags = {h.chunk.id.split("-", 1)[0] for h in readers[n].hybrid_search(qvec, "alpha beta", 12)}
            seen[n].append(tags)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        writer = PostgresStore(pg_database, writable=True)
        chunks, vectors, documents = _entries(new, "new")
        writer.delete_documents(old)
        writer.add(chunks, vectors)
        time.sleep(0.3)  # readers run while the build is written but not committed
        in_flight = [len(s) for s in seen]
        snapshot_reader = PostgresStore(pg_database)
        with snapshot_reader.snapshot():
            before = snapshot_reader.manifest()
            writer.commit(_fields(documents))
            assert snapshot_reader.manifest() == before  # a snapshot keeps its build
        assert snapshot_reader.manifest().documents["doc0.txt"].content_hash == "new-doc0.txt"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(s and s[-1] == {"new"} for s in seen):
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert all(count > 0 for count in in_flight)
    for observations in seen:
        assert all(tags in ({"old"}, {"new"}) for tags in observations), "a reader saw two builds at once"
        assert observations[0] == {"old"} and observations[-1] == {"new"}
        # once the new build was seen, never the old one again
        first_new = observations.index({"new"})
        assert all(tags == {"new"} for tags in observations[first_new:])
    writer.close()
    snapshot_reader.close()
    for reader in readers:
        reader.close()


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_a_search_during_a_commit_reads_one_build_and_never_fails(pg_database, mode):
    """The retriever's reads (ranking, chunks, vectors) see one build even when another commits
    between them: here the new build, with new chunk ids, commits right after the ranking."""
    from rag.embedding import HashingEmbedder
    from rag.postgres import PostgresStore
    from rag.retrieval import Retriever

    texts = {"a.txt": "alpha volcano erupted", "b.txt": "beta volcano ash"}
    _write_build(pg_database, texts, "v1")
    reader, writer = PostgresStore(pg_database), PostgresStore(pg_database, writable=True)
    chunks, vectors, documents = _entries(texts, "v2")
    writer.delete_documents(texts)
    writer.add(chunks, vectors)
    name = "search" if mode == "dense" else "lexical_search"
    rank, committed = getattr(reader, name), []

    def rank_then_commit(*args, **kwargs):
        found = rank(*args, **kwargs)
        if not committed:
            committed.append(writer.commit(_fields(documents)))
        return found

    setattr(reader, name, rank_then_commit)
    retriever = Retriever(reader, HashingEmbedder(256))
    hits = retriever.search("volcano", top_k=2, mode=mode)
    assert committed and reader.current_build() == writer.current_build()  # it did commit meanwhile
    assert sorted(h.chunk.id for h in hits) == ["v1-a.txt", "v1-b.txt"]  # whole, from the first build
    assert all(h.dense_score > 0 for h in hits)
    assert sorted(h.chunk.id for h in retriever.search("volcano", top_k=2, mode=mode)) == ["v2-a.txt", "v2-b.txt"]
    writer.close()
    reader.close()


_KILLED_BUILDER = r"""
import sys
from rag.embedding import HashingEmbedder
from rag.postgres import PostgresStore
from rag.types import Chunk

writer = PostgresStore(sys.argv[1], writable=True)
writer.delete_documents(["a.txt", "b.txt"])
text = "half written build that must never be seen"
chunk = Chunk(id="half", source="a.txt", ordinal=0, text=text, start_char=0, end_char=len(text),
              start_line=1, end_line=1, tokens=8)
writer.add([chunk], HashingEmbedder(256).embed([text]))
print("ready", flush=True)
sys.stdin.read()  # hold the transaction open until killed
"""


def test_a_builder_killed_mid_transaction_leaves_the_previous_build_serving(pg_database):
    from rag.embedding import HashingEmbedder
    from rag.postgres import PostgresStore

    _write_build(pg_database, {"a.txt": "alpha volcano", "b.txt": "beta river"}, "v1")
    reader = PostgresStore(pg_database)
    before = reader.manifest()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    builder = subprocess.Popen(
        [sys.executable, "-c", _KILLED_BUILDER, pg_database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    try:
        assert builder.stdout.readline().strip() == "ready"
        states = _sql(pg_database, "SELECT state FROM pg_stat_activity WHERE application_name = 'rag-index' AND datname = current_database()")
        assert states == [("idle in transaction",)]
        assert reader.manifest() == before  # uncommitted: invisible
        builder.send_signal(signal.SIGKILL)
        builder.wait(timeout=10)
    finally:
        if builder.poll() is None:
            builder.kill()
        builder.stdin.close()
        builder.stdout.close()
    assert builder.returncode == -signal.SIGKILL

    assert reader.manifest() == before
    qvec = HashingEmbedder(256).embed(["half written build"])[0]
    assert {h.chunk.id for h in reader.hybrid_search(qvec, "half written build", 5)} == {"v1-a.txt", "v1-b.txt"}
    started = time.monotonic()
    with PostgresStore(pg_database, writable=True, lock_timeout=10) as next_builder:
        next_builder.begin()  # the dead builder's lock went with its connection
        assert next_builder.manifest() == before
    assert time.monotonic() - started < 5
    assert _sql(pg_database, "SELECT count(*) FROM rag_chunks WHERE id = 'half'") == [(0,)]
    reader.close()


def test_a_streaming_replica_serves_what_the_primary_committed(pg_server, pg_database):
    from rag.embedding import HashingEmbedder
    from rag.errors import IndexStoreError
    from rag.postgres import PostgresStore

    _write_build(pg_database, {"a.txt": "alpha volcano"}, "v1")
    replica = pg_server.replica()
    try:
        replica_url = replica.url(pg_database.rsplit("/", 1)[1])
        reader = PostgresStore(replica_url)
        assert reader.manifest().documents["a.txt"].content_hash == "v1-a.txt"
        _write_build(pg_database, {"a.txt": "alpha volcano", "b.txt": "glacier lagoon"}, "v2")
        primary_build = PostgresStore(pg_database).current_build()
        deadline = time.monotonic() + 15
        while reader.current_build() != primary_build and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.current_build() == primary_build
        assert set(reader.manifest().documents) == {"a.txt", "b.txt"}  # not the manifest read before
        assert reader.stats().build == primary_build and reader.stats().chunks == 2
        qvec = HashingEmbedder(256).embed(["glacier lagoon"])[0]
        assert reader.hybrid_search(qvec, "glacier lagoon", 1)[0].chunk.id == "v2-b.txt"
        assert reader.lexical_search("lagoon", 3)[0][0] == "v2-b.txt"
        with pytest.raises(IndexStoreError, match="replica"):
            PostgresStore(replica_url, writable=True).begin()
        reader.close()
    finally:
        replica.stop()
        replica.remove()


# -- errors users see ----------------------------------------------------------------------------
def test_an_unreachable_database_names_the_setting_and_never_the_password(make_settings):
    pytest.importorskip("psycopg")
    from pg_server import free_port
    from rag.errors import ConfigError, RagError
    from rag.errors import DatabaseUnavailableError
    from rag.vectorstore import open_store

    url = f"postgresql://rag:s3cret-pw@127.0.0.1:{free_port()}/rag"
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store(make_settings(store="postgres", database_url=url))
    message = str(caught.value)
    assert isinstance(caught.value, RagError)
    assert "RAG_DATABASE_URL" in message and "postgresql://rag@127.0.0.1" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(caught.value)
    # libpq quotes a URL it cannot parse: the password is blanked there too
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store(make_settings(store="postgres", database_url="postgresql://rag:s3cret-pw@[::1/rag"))
    assert "RAG_DATABASE_URL" in str(caught.value) and "s3cret-pw" not in str(caught.value)
    with pytest.raises(ConfigError, match="RAG_DATABASE_URL"):
        open_store(make_settings(store="postgres"))


def test_a_reader_reconnects_once_after_the_server_drops_its_connection(pg_database):
    from rag.postgres import PostgresStore

    _write_build(pg_database, {"a.txt": "alpha volcano"}, "v1")
    reader = PostgresStore(pg_database)
    before = reader.manifest()
    dropped = _sql(
        pg_database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'rag' AND datname = current_database()",
    )
    assert dropped == [(True,)]  # the reader's one pooled connection
    assert reader.manifest() == before
    reader.close()


def test_a_database_without_an_index_says_how_to_build_one(pg_settings):
    from rag.errors import IndexNotFoundError
    from rag.vectorstore import open_store

    with pytest.raises(IndexNotFoundError, match="rag index"):
        open_store(pg_settings())


# -- the product on top ----------------------------------------------------------------------------
def test_two_rag_processes_on_one_database_answer_from_the_seeds_and_see_each_others_edits(
    pg_settings, seeds_copy, real_embedder
):
    from rag.config import DEFAULT_EMBEDDING_MODEL
    from rag.pipeline import Rag

    settings = pg_settings(embedding_model=DEFAULT_EMBEDDING_MODEL, generator="extractive")
    builder, server = Rag(settings, embedder=real_embedder), Rag(settings, embedder=real_embedder)
    report = builder.index()
    assert len(report.added) == len(list(seeds_copy.iterdir()))

    answer = server.ask("Which Qwen3 variation is described as coding-proficient?")
    assert not answer.refused and "Qwen3-Coder" in answer.text
    assert answer.citations and all(c.verified for c in answer.citations)
    assert {c.source for c in answer.citations} <= set(os.listdir(seeds_copy))

    question = "Which bird nests on the cliffs of Látrabjarg?"
    assert server.ask(question).refused
    edited = sorted(seeds_copy.iterdir())[1]
    edited.write_text(
        "Seabirds of Iceland\n\nThe Atlantic puffin nests on the cliffs of Látrabjarg every summer.\n",
        encoding="utf-8",
    )
    assert builder.index().changed == [edited.name]
    answer = server.ask(question)  # the other process's next question sees the new build
    assert not answer.refused and "puffin" in answer.text.lower()
    assert any(c.source == edited.name and "puffin" in c.quote.lower() for c in answer.citations)
