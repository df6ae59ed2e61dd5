"""The vector-store protocol: where chunks, their vectors and their words live between builds.

One protocol, several places to keep an index: FAISS + bm25s files on one disk (the default),
FAISS with an approximate index for big single machines, PostgreSQL + pgvector for a shared index
served by many processes. The indexer writes through it and the retriever reads through it, so a
new store is one class (see docs/ARCHITECTURE.md, "Adding a vector store").

Shaped for a remote store: chunks are addressed by id, carry their metadata (source, ordinal,
lines, pages), are inserted in batches and deleted by source document; a build is made visible
all at once by `commit()` (a transaction, or a folder swapped in by rename), so readers see the
old build or the new one, never a mix.

A store implements the few methods that differ (ReadableStore's and WritableStore's first group)
and derives from BaseStore, which gives every other ability a default built on them. Nothing
outside this module asks which store it holds: what differs is a method of the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from rag.errors import ConfigError, IndexMismatchError
from rag.types import Chunk, Frozen, Hit, Manifest

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from rag.config import Settings

RRF_K = 60  # the constant from Cormack et al.; large enough that ranks, not scores, decide


class StoreStats(Frozen):
    """What `rag status` and the manifest say about a store."""

    kind: str  # "faiss", "postgres", ...
    index_kind: str  # "flat", "hnsw", "ivf", ...
    build: str | None  # id of the build readers see
    documents: int
    chunks: int
    dimension: int
    parameters: dict[str, int | float | str] = {}


@runtime_checkable
class ReadableStore(Protocol):
    """What answering needs: one consistent build, searched by vector and by words."""

    kind: str
    schema_version: int

    # -- what each store implements --
    def manifest(self) -> Manifest:
        """What the build readers see was made from (model, dimension, chunking, documents).

        Raises IndexNotFoundError when nothing has been committed yet.
        """
        ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k chunk ids closest to a normalised query vector, with cosine scores, best first."""
        ...

    def lexical_search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The k chunk ids that best match the query's words (BM25 or full-text rank), best first."""
        ...

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order asked."""
        ...

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (normalised) vectors of these chunk ids, one row each, in the order asked."""
        ...

    def stats(self) -> StoreStats: ...

    # -- what BaseStore gives a default --
    def all_chunks(self) -> list[Chunk]: ...
    def ranked(self, vector: np.ndarray, query: str, depth: int, mode: str) -> list[Hit]: ...
    def hybrid_search(self, vector: np.ndarray, query: str, k: int, *, depth: int | None = None) -> list[Hit]: ...
    def snapshot(self) -> AbstractContextManager[ReadableStore]: ...
    def check_compatible(self, embedding_model: str, chunk_tokens: int, chunk_overlap: int) -> None: ...
    def stale(self) -> bool: ...
    def close(self) -> None: ...


@runtime_checkable
class WritableStore(ReadableStore, Protocol):
    """What indexing needs: batch insert, delete by source, then make it all visible at once."""

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert chunks with their vectors (rows in the same order), in one batch."""
        ...

    def delete_documents(self, sources: Iterable[str]) -> int:
        """Remove every chunk of these source documents; returns how many chunks went."""
        ...

    def commit(self, manifest_fields: dict) -> Manifest:
        """Make everything added and deleted since the last commit visible to readers at once.

        `manifest_fields` holds what the caller knows (embedding_model, dimension,
        max_model_tokens, chunk_tokens, chunk_overlap, tokenizer, documents, library_versions,
        optionally "seconds" spent before the commit); the store adds the rest and returns it.
        """
        ...

    def sweep(self) -> None: ...


class BaseStore:
    """The defaults of every ability a store may do its own way; a store derives from it and
    overrides only what it does better (PostgreSQL: hybrid search in one query, snapshots)."""

    kind: ClassVar[str]
    schema_version: ClassVar[int] = 1  # the format a store writes; a build of another is rebuilt

    @classmethod
    def status_manifest(cls, settings: Settings) -> Manifest:
        """The manifest `rag status` shows (IndexNotFoundError when there is none): by default the
        store is opened, checked against the settings, and asked."""
        store = cls.open(settings)  # type: ignore[attr-defined]
        try:
            return store.manifest()
        finally:
            store.close()

    @classmethod
    def location(cls, settings: Settings) -> str:
        """Where `rag status` says the index lives."""
        return cls.kind

    def all_chunks(self) -> list[Chunk]:
        """Every chunk of the build in use, in the manifest's order, read from one build."""
        with self.snapshot() as store:
            documents = store.manifest().documents.values()
            return store.chunks([cid for entry in documents for cid in entry.chunk_ids])

    def ranked(self, vector: np.ndarray, query: str, depth: int, mode: str) -> list[Hit]:
        """What the retriever ranks: the `depth` best chunks by vector ("dense") or by words
        ("bm25"), or both lists fused by reciprocal rank ("hybrid": the whole fusion, up to
        2 x depth; a store fusing in its own query may cut it at depth), best first, with each
        chunk's cosine and lexical score, all read from one build."""
        with self.snapshot() as store:
            dense = store.search(vector, depth) if mode in ("dense", "hybrid") else []
            lexical = store.lexical_search(query, depth) if mode in ("bm25", "hybrid") else []
            ranked = fuse(dense, lexical, mode)
            if not ranked:
                return []
            ids = [cid for cid, _ in ranked]
            chunks = store.chunks(ids)
            # The relevance floor reads the cosine whatever the ranking mode, so it is computed for all.
            cosine = (store.vectors(ids) @ vector).astype(float).tolist()
        bm25_by_id = dict(lexical)
        return [
            Hit(
                chunk=chunk,
                score=round(score, 6),
                dense_score=round(cos, 6),
                bm25_score=round(bm25_by_id[cid], 6) if cid in bm25_by_id else None,
                rank=rank,
            )
            for rank, ((cid, score), chunk, cos) in enumerate(zip(ranked, chunks, cosine), start=1)
        ]

    def hybrid_search(self, vector: np.ndarray, query: str, k: int, *, depth: int | None = None) -> list[Hit]:
        """Up to k chunks, best first: the `depth` (default k) nearest vectors and best word
        matches fused by reciprocal rank, with each chunk's cosine and lexical score."""
        return self.ranked(vector, query, depth or k, "hybrid")[:k]

    @contextmanager
    def snapshot(self) -> Iterator[BaseStore]:
        """Every read inside sees the same build; a store that reads one build anyway is its own."""
        yield self

    def check_compatible(self, embedding_model: str, chunk_tokens: int, chunk_overlap: int) -> None:
        """IndexMismatchError (saying what to do) when the build in use was made with another
        embedding model or chunking; IndexNotFoundError when there is none."""
        check_manifest(self.manifest(), embedding_model=embedding_model, chunk_tokens=chunk_tokens,
                       chunk_overlap=chunk_overlap)

    def stale(self) -> bool:
        """Whether a newer build was committed that this store will not serve (then open it
        again); a store that always serves its newest build never is."""
        return False

    def sweep(self) -> None:
        """Tidy what an earlier build killed half-way left behind, when a build writes nothing;
        the caller holds the build lock. Nothing to tidy by default."""

    def close(self) -> None:
        """Let go of connections, transactions and locks; nothing to let go of by default."""


def fuse(dense: list[tuple[str, float]], lexical: list[tuple[str, float]], mode: str) -> list[tuple[str, float]]:
    """One ranking: a single list as is, or both by reciprocal rank fusion (ties by id)."""
    if mode == "dense":
        return dense
    if mode == "bm25":
        return lexical
    fused: dict[str, float] = {}
    for results in (dense, lexical):
        for rank, (cid, _) in enumerate(results, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def check_manifest(manifest: Manifest, *, embedding_model: str, chunk_tokens: int, chunk_overlap: int) -> None:
    """Raise IndexMismatchError saying exactly what to do when settings and index disagree."""
    problems = []
    if manifest.embedding_model != embedding_model:
        problems.append(
            f"it was embedded with {manifest.embedding_model!r} but RAG_EMBEDDING_MODEL is "
            f"{embedding_model!r}"
        )
    if (manifest.chunk_tokens, manifest.chunk_overlap) != (chunk_tokens, chunk_overlap):
        problems.append(
            f"it was chunked with RAG_CHUNK_TOKENS={manifest.chunk_tokens}, "
            f"RAG_CHUNK_OVERLAP={manifest.chunk_overlap} but the settings say "
            f"{chunk_tokens}, {chunk_overlap}"
        )
    if problems:
        raise IndexMismatchError(
            "the index does not match the settings: "
            + "; ".join(problems)
            + ". Run `rag index` to rebuild it, or restore the previous settings"
        )


# name -> "module:class"; each class derives from BaseStore and has
# `open(settings, *, writable=False, check=True) -> store`. Imported on use, so FAISS is not
# loaded for PostgreSQL nor psycopg for FAISS.
STORES = {
    "faiss": "rag.faiss_store:FaissStore",
    "postgres": "rag.postgres:PostgresStore",
}


def store_class(settings: Settings) -> type[BaseStore]:
    """The class of the store RAG_STORE names, imported now."""
    target = STORES.get(settings.store)
    if target is None:
        raise ConfigError(f"RAG_STORE: unknown store {settings.store!r}; choose one of {', '.join(STORES)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(
            f"RAG_STORE={settings.store}: this installation has no {module_name} module; "
            "set RAG_STORE=faiss or install a version that has it"
        ) from None
    return getattr(module, class_name)


def open_store(settings: Settings, *, writable: bool = False, check: bool = True) -> WritableStore:
    """The store RAG_STORE names: readable (checked against the settings) or writable.

    Readable, it is the build in use, and IndexMismatchError says what to do when it was made
    with another embedding model or chunking (`check=False` leaves that to the caller's
    `check_compatible`). Writable, it starts from the build in use (or nothing) whatever it was
    made with: the indexer decides what to keep.
    """
    return store_class(settings).open(settings, writable=writable, check=check)  # type: ignore[attr-defined]
