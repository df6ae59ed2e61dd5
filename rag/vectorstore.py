"""The vector-store protocol: where chunks, their vectors and their words live between builds.

One protocol, several places to keep an index: FAISS + bm25s files on one disk (the default),
FAISS with an approximate index for big single machines, PostgreSQL + pgvector for a shared index
served by many processes. The indexer writes through it and the retriever reads through it, so a
new store is one class (see docs/ARCHITECTURE.md, "Adding a vector store").

Shaped for a remote store: chunks are addressed by id, carry their metadata (source, ordinal,
lines, pages), are inserted in batches and deleted by source document; a build is made visible
all at once by `commit()` (a transaction, or a folder swapped in by rename), so readers see the
old build or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from rag.errors import ConfigError
from rag.types import Chunk, Frozen, Manifest

if TYPE_CHECKING:
    from rag.config import Settings


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


# name -> "module:class"; each class has `open(settings, *, writable) -> store`. Imported on use,
# so FAISS is not loaded for PostgreSQL nor psycopg for FAISS.
STORES = {
    "faiss": "rag.faiss_store:FaissStore",
    "postgres": "rag.postgres:PostgresStore",
}


def open_store(settings: Settings, *, writable: bool = False) -> ReadableStore | WritableStore:
    """The store RAG_STORE names: readable (checked against the settings) or writable.

    Readable, it is the build in use, and IndexMismatchError says what to do when it was made
    with another embedding model or chunking. Writable, it starts from the build in use (or
    nothing) whatever it was made with: the indexer decides what to keep.
    """
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
    return getattr(module, class_name).open(settings, writable=writable)
