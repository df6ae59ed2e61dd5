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
from typing import Protocol, runtime_checkable

import numpy as np

from rag.types import Chunk, Frozen, Manifest


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
        """What the build readers see was made from (model, dimension, chunking, documents)."""
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
        """Make everything added and deleted since the last commit visible to readers at once."""
        ...
