"""The vector-store contract: what every store behind rag.vectorstore must do, as plain functions.

Each `check_*` function takes an `open_store`: a callable that opens the store under test at one
fixed, initially empty place (a folder, a database), called as

    open_store()                      # readable, checked against the settings
    open_store(writable=True)         # writable, starting from what is committed
    open_store(embedding_model="x")   # keyword arguments override the settings
    open_store(check=False)           # readable, not checked against the settings

with the settings' embedding model set to MODEL unless overridden. A store passes the contract
when every function of CHECKS returns without raising; tests/test_store_contract.py runs them for
the FAISS kinds. Vectors are compared with a tolerance a half-precision store meets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rag.errors import IndexMismatchError, IndexNotFoundError, IndexStoreError, RagError
from rag.types import Chunk, DocumentEntry
from rag.vectorstore import ReadableStore, WritableStore, fuse

MODEL = "hashing-16"
DIM = 16
CHUNK_TOKENS, CHUNK_OVERLAP = 180, 30  # the settings' defaults: a reader checks them
ATOL = 2e-3
OpenStore = Callable[..., Any]

TEXTS = {
    "a.txt": ["Apples grow in the orchard.", "The orchard harvest comes in autumn.",
              "Cider is pressed from apples.", "Bees pollinate the blossoms."],
    "b.md": ["Volcanoes erupt with molten lava.", "Lava cools into basalt rock.",
             "Iceland has many volcanoes.", "Ash clouds ground airplanes."],
    "notes/c.pdf": ["Sourdough needs a starter.", "Flour and water feed the starter.",
                    "Bread bakes in a hot oven.", "Crust forms as bread bakes."],
    "d.txt": ["Rivers carry sediment to deltas.", "The Danube flows through Vienna.",
              "Salmon swim upstream to spawn.", "Floods enrich the plains."],
}


def document(path: str, version: str = "1") -> list[Chunk]:
    """The chunks of one test document: one sentence a line, page numbers for the PDF."""
    lines = TEXTS[path]
    chunks, offset = [], 0
    for ordinal, line in enumerate(lines):
        page = ordinal // 2 + 1 if path.endswith(".pdf") else None
        chunks.append(Chunk(
            id=hashlib.sha1(f"{path}\0{version}\0{ordinal}".encode()).hexdigest()[:16],
            source=path, ordinal=ordinal, text=line, start_char=offset, end_char=offset + len(line),
            start_line=ordinal + 1, end_line=ordinal + 1, page=page, page_end=page, tokens=len(line.split()),
        ))
        offset += len(line) + 1
    return chunks


def vectors_for(chunks: list[Chunk], dim: int = DIM) -> np.ndarray:
    """Nearly orthogonal unit vectors, one per chunk, fixed by the chunk's place in TEXTS."""
    paths = list(TEXTS)
    out = np.zeros((len(chunks), dim), dtype=np.float32)
    for row, chunk in enumerate(chunks):
        slot = (paths.index(chunk.source) * 4 + chunk.ordinal) % dim
        noise = np.random.default_rng(slot + 100 * dim).normal(scale=0.05, size=dim)
        out[row, slot] = 1.0
        out[row] += noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def entry(chunks: list[Chunk], version: str = "1") -> DocumentEntry:
    path = chunks[0].source
    return DocumentEntry(path=path, content_hash=hashlib.sha256(f"{path}{version}".encode()).hexdigest(),
                         chunk_ids=[c.id for c in chunks], kind=path.rsplit(".", 1)[-1])


def fields(docs: dict[str, list[Chunk]], *, model: str = MODEL, dim: int = DIM) -> dict:
    """Manifest fields as the indexer passes them to commit()."""
    return {
        "embedding_model": model, "dimension": dim, "max_model_tokens": 256,
        "chunk_tokens": CHUNK_TOKENS, "chunk_overlap": CHUNK_OVERLAP, "tokenizer": "cl100k_base",
        "documents": {path: entry(chunks) for path, chunks in sorted(docs.items())},
        "library_versions": {}, "seconds": 0.5,
    }


def write(open_store: OpenStore, paths: list[str]) -> dict[str, list[Chunk]]:
    """Commit these documents (added in two batches) into an empty store; returns their chunks."""
    docs = {path: document(path) for path in paths}
    writer = open_store(writable=True)
    assert isinstance(writer, WritableStore)
    every = [c for path in paths for c in docs[path]]
    half = len(every) // 2
    writer.add(every[:half], vectors_for(every[:half]))
    writer.add(every[half:], vectors_for(every[half:]))
    writer.commit(fields(docs))
    return docs


def _ids(results: list[tuple[str, float]]) -> list[str]:
    return [cid for cid, _ in results]


def _close(store: Any) -> None:
    """Let go of a writer that will not commit (every store has `close`; a store holding a build
    lock lets it go)."""
    store.close()


# -- the checks ----------------------------------------------------------------------------------
def check_empty_store(open_store: OpenStore) -> None:
    """Nothing committed: the writer has no manifest yet, a reader says there is no index."""
    writer = open_store(writable=True)
    with pytest.raises(IndexNotFoundError):
        writer.manifest()
    assert writer.stats().chunks == 0
    _close(writer)
    with pytest.raises(IndexNotFoundError):
        open_store()


def check_commit_returns_the_manifest(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    assert isinstance(reader, ReadableStore)
    manifest = reader.manifest()
    assert (manifest.embedding_model, manifest.dimension) == (MODEL, DIM)
    assert (manifest.chunk_tokens, manifest.chunk_overlap) == (CHUNK_TOKENS, CHUNK_OVERLAP)
    assert manifest.chunk_count == 12
    assert manifest.documents == fields(docs)["documents"]
    assert manifest.build_seconds >= 0.5


def check_search_finds_the_nearest_vector(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    every = [c for chunks in docs.values() for c in chunks]
    vectors = vectors_for(every)
    for row in (0, 5, 11):
        results = reader.search(vectors[row], 3)
        assert 1 <= len(results) <= 3
        assert results[0][0] == every[row].id
        assert results[0][1] == pytest.approx(1.0, abs=ATOL)
        scores = [s for _, s in results]
        assert scores == sorted(scores, reverse=True)
    assert len(reader.search(vectors[0], 50)) <= 12


def check_lexical_search_matches_words(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    basalt = docs["b.md"][1].id
    assert _ids(reader.lexical_search("basalt", 5)) == [basalt]
    found = _ids(reader.lexical_search("where is the starter for sourdough", 5))
    assert found and set(found) <= {c.id for c in docs["notes/c.pdf"]}
    assert found[0] == docs["notes/c.pdf"][0].id  # both words
    assert reader.lexical_search("quantum chromodynamics", 5) == []
    scores = [s for _, s in reader.lexical_search("bread orchard lava", 10)]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def check_chunks_and_vectors_round_trip(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    wanted = [docs["notes/c.pdf"][3], docs["a.txt"][0], docs["b.md"][2], docs["notes/c.pdf"][0]]
    ids = [c.id for c in wanted]
    assert reader.chunks(ids) == wanted  # metadata included (pages, lines, spans), in the order asked
    np.testing.assert_allclose(reader.vectors(ids), vectors_for(wanted), atol=ATOL)
    assert reader.vectors([]).shape[0] == 0


def check_delete_documents(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    writer = open_store(writable=True)
    assert writer.delete_documents(["b.md"]) == 4
    assert writer.delete_documents(["no-such-file.txt"]) == 0
    kept = {p: c for p, c in docs.items() if p != "b.md"}
    writer.commit(fields(kept))
    reader = open_store()
    assert set(reader.manifest().documents) == {"a.txt", "notes/c.pdf"}
    assert reader.manifest().chunk_count == 8
    gone = {c.id for c in docs["b.md"]}
    assert not gone & set(_ids(reader.search(vectors_for(docs["b.md"])[1], 12)))
    assert reader.lexical_search("basalt lava volcanoes", 5) == []
    assert reader.stats().chunks == 8


def check_readers_see_the_old_build_until_commit(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    before = open_store().manifest()
    writer = open_store(writable=True)
    assert writer.manifest().documents == before.documents  # what the writer plans against
    writer.delete_documents(["b.md"])
    d = document("d.txt")
    writer.add(d, vectors_for(d))
    reader = open_store()  # opened while the writer holds uncommitted changes
    assert reader.manifest().documents == before.documents
    assert _ids(reader.lexical_search("basalt", 5)) == [docs["b.md"][1].id]
    assert reader.lexical_search("danube vienna", 5) == []
    assert d[1].id not in _ids(reader.search(vectors_for(d)[1], 3))

    after = writer.commit(fields({"a.txt": docs["a.txt"], "notes/c.pdf": docs["notes/c.pdf"], "d.txt": d}))
    fresh = open_store()
    assert fresh.manifest().documents == after.documents
    assert set(after.documents) == {"a.txt", "notes/c.pdf", "d.txt"}
    assert _ids(fresh.lexical_search("danube vienna", 5))[0] == d[1].id
    assert fresh.search(vectors_for(d)[1], 3)[0][0] == d[1].id
    assert fresh.lexical_search("basalt", 5) == []


def check_unchanged_documents_keep_their_vectors(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    writer = open_store(writable=True)
    new_b = document("b.md", version="2")
    writer.delete_documents(["b.md"])
    writer.add(new_b, vectors_for(new_b))
    writer.commit(fields({"a.txt": docs["a.txt"], "b.md": new_b, "notes/c.pdf": docs["notes/c.pdf"]}))
    reader = open_store()
    kept = docs["a.txt"] + docs["notes/c.pdf"]
    np.testing.assert_allclose(reader.vectors([c.id for c in kept]), vectors_for(kept), atol=ATOL)
    assert reader.chunks([c.id for c in new_b]) == new_b


def check_a_writer_commits_more_than_once(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt"])
    writer = open_store(writable=True)
    b = document("b.md")
    writer.add(b, vectors_for(b))
    writer.commit(fields({"a.txt": docs["a.txt"], "b.md": b}))
    assert writer.manifest().chunk_count == 8
    writer.delete_documents(["a.txt"])
    writer.commit(fields({"b.md": b}))
    assert set(open_store().manifest().documents) == {"b.md"}


def check_stats(open_store: OpenStore) -> None:
    write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    stats = open_store().stats()
    assert stats.kind and stats.index_kind and stats.build
    assert (stats.documents, stats.chunks, stats.dimension) == (3, 12, DIM)


def check_another_model_is_a_mismatch(open_store: OpenStore) -> None:
    write(open_store, ["a.txt"])
    with pytest.raises(IndexMismatchError) as info:
        open_store(embedding_model="hashing-32")
    assert MODEL in str(info.value) and "hashing-32" in str(info.value)
    assert "rag index" in str(info.value)


def check_vectors_of_another_dimension_are_refused(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md"])
    writer = open_store(writable=True)
    d = document("d.txt")
    with pytest.raises(IndexStoreError):
        writer.add(d, vectors_for(d, dim=8))
        writer.commit({**fields({**docs, "d.txt": d}), "dimension": 8})
    _close(writer)
    reader = open_store()
    assert set(reader.manifest().documents) == {"a.txt", "b.md"}
    assert reader.manifest().dimension == DIM


def check_a_manifest_that_lists_other_chunks_is_refused(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md"])
    writer = open_store(writable=True)
    d = document("d.txt")
    writer.add(d, vectors_for(d))
    with pytest.raises(RagError):
        writer.commit(fields(docs))  # d.txt's chunks were added but the manifest leaves them out
    _close(writer)
    assert set(open_store().manifest().documents) == {"a.txt", "b.md"}


def check_a_full_rebuild_may_change_model_and_dimension(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md"])
    writer = open_store(writable=True)
    writer.delete_documents(list(docs))
    d = document("d.txt")
    writer.add(d, vectors_for(d, dim=8))
    writer.commit(fields({"d.txt": d}, model="hashing-8", dim=8))
    reader = open_store(embedding_model="hashing-8")
    assert (reader.manifest().embedding_model, reader.manifest().dimension) == ("hashing-8", 8)
    assert reader.search(vectors_for(d, dim=8)[2], 1)[0][0] == d[2].id
    with pytest.raises(IndexMismatchError):
        open_store()


def check_headers_are_kept_and_searched_with_the_text(open_store: OpenStore) -> None:
    """A chunk's header comes back with it and its words find it, though its text lacks them."""
    under = [c.model_copy(update={"header": "Orchard notes > Leon Liao's avatar"}) for c in document("a.txt")]
    docs = {"a.txt": under, "b.md": document("b.md")}
    writer = open_store(writable=True)
    writer.add(under + docs["b.md"], vectors_for(under + docs["b.md"]))
    writer.commit(fields(docs))
    reader = open_store()
    assert reader.chunks([under[2].id]) == [under[2]]
    assert "Liao" not in under[2].text
    assert set(_ids(reader.lexical_search("Leon Liao", 10))) == {c.id for c in under}
    assert reader.lexical_search("Leon cider", 10)[0][0] == under[2].id  # header and text words together


def check_all_chunks_are_the_build_s_in_manifest_order(open_store: OpenStore) -> None:
    docs = write(open_store, ["notes/c.pdf", "a.txt", "b.md"])
    reader = open_store()
    in_order = [c for path in sorted(docs) for c in docs[path]]
    assert reader.all_chunks() == in_order  # whole chunks, metadata included
    writer = open_store(writable=True)
    writer.delete_documents(["a.txt"])
    writer.commit(fields({p: c for p, c in docs.items() if p != "a.txt"}))
    writer.close()
    assert open_store().all_chunks() == docs["b.md"] + docs["notes/c.pdf"]


def check_hybrid_search_fuses_both_searches_by_reciprocal_rank(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    every = [c for chunks in docs.values() for c in chunks]
    vector, query = vectors_for(every)[5], "bread lava orchard"
    for k in (3, 12):
        expected = fuse(reader.search(vector, k), reader.lexical_search(query, k), "hybrid")[:k]
        hits = reader.hybrid_search(vector, query, k)
        assert [h.chunk.id for h in hits] == [cid for cid, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        for hit in hits:
            assert hit.chunk == reader.chunks([hit.chunk.id])[0]
            assert hit.dense_score == pytest.approx(float(reader.vectors([hit.chunk.id])[0] @ vector), abs=ATOL)
    lexical = dict(reader.lexical_search(query, 12))
    assert {h.chunk.id for h in reader.hybrid_search(vector, query, 12) if h.bm25_score is not None} <= set(lexical)


def check_ranked_is_one_search_or_both(open_store: OpenStore) -> None:
    docs = write(open_store, ["a.txt", "b.md", "notes/c.pdf"])
    reader = open_store()
    vector = vectors_for(docs["b.md"])[1]
    dense = reader.ranked(vector, "sourdough starter", 4, "dense")
    assert [h.chunk.id for h in dense] == _ids(reader.search(vector, 4))
    assert all(h.bm25_score is None for h in dense)
    words = reader.ranked(vector, "sourdough starter", 4, "bm25")
    assert [h.chunk.id for h in words] == _ids(reader.lexical_search("sourdough starter", 4))
    assert all(h.bm25_score is not None and h.dense_score < 0.5 for h in words)  # cosine to another text
    both = {h.chunk.id for h in reader.ranked(vector, "sourdough starter", 4, "hybrid")}
    assert {h.chunk.id for h in dense[:1] + words[:1]} <= both
    assert reader.ranked(vector, "quantum chromodynamics", 4, "bm25") == []


def check_the_other_abilities_have_working_defaults(open_store: OpenStore) -> None:
    write(open_store, ["a.txt", "b.md"])
    reader = open_store()
    with reader.snapshot() as pinned:
        assert pinned.manifest() == reader.manifest()
        assert pinned.all_chunks() == reader.all_chunks()
    assert reader.schema_version == reader.manifest().schema_version
    assert not reader.stale()  # nothing committed since it was opened
    reader.check_compatible(MODEL, CHUNK_TOKENS, CHUNK_OVERLAP)
    with pytest.raises(IndexMismatchError):
        reader.check_compatible("hashing-32", CHUNK_TOKENS, CHUNK_OVERLAP)
    with pytest.raises(IndexMismatchError):
        reader.check_compatible(MODEL, CHUNK_TOKENS + 1, CHUNK_OVERLAP)
    unchecked = open_store(check=False, embedding_model="hashing-32")  # the caller checks
    assert unchecked.manifest().embedding_model == MODEL
    unchecked.close()
    writer = open_store(writable=True)
    writer.sweep()  # nothing half-written to tidy: the build in use is untouched
    writer.close()
    assert set(open_store().manifest().documents) == {"a.txt", "b.md"}
    reader.close()
    reader.close()  # closing twice is harmless


CHECKS = [
    check_empty_store,
    check_commit_returns_the_manifest,
    check_search_finds_the_nearest_vector,
    check_lexical_search_matches_words,
    check_chunks_and_vectors_round_trip,
    check_delete_documents,
    check_readers_see_the_old_build_until_commit,
    check_unchanged_documents_keep_their_vectors,
    check_a_writer_commits_more_than_once,
    check_stats,
    check_another_model_is_a_mismatch,
    check_vectors_of_another_dimension_are_refused,
    check_a_manifest_that_lists_other_chunks_is_refused,
    check_a_full_rebuild_may_change_model_and_dimension,
    check_headers_are_kept_and_searched_with_the_text,
    check_all_chunks_are_the_build_s_in_manifest_order,
    check_hybrid_search_fuses_both_searches_by_reciprocal_rank,
    check_ranked_is_one_search_or_both,
    check_the_other_abilities_have_working_defaults,
]
