"""The default vector store: FAISS vectors and a bm25s index in build folders on one disk.

Read-only, a FaissStore is one loaded build: CURRENT is read once, so every call sees the same
build however many are swapped in meanwhile. Writable, it starts from the build in use (or
nothing), keeps deletions and additions in memory, and `commit` writes a new build folder and
swaps CURRENT to it (rag/faiss_folder.py): readers see the old build until then, and a writer that dies
before then leaves it serving. One writer at a time: the indexer holds the index lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rag import faiss_folder, faiss_index
from rag.config import Settings
from rag.errors import IndexMismatchError, IndexNotFoundError, IndexStoreError, RagError
from rag.lexical import search_bm25
from rag.faiss_folder import LoadedIndex
from rag.types import Chunk, DocumentEntry, Manifest
from rag.vectorstore import BaseStore, StoreStats

log = logging.getLogger(__name__)


class FaissStore(BaseStore):
    """FAISS + bm25s build folders behind the ReadableStore / WritableStore protocol."""

    kind = "faiss"
    schema_version = faiss_folder.SCHEMA_VERSION

    def __init__(self, index_dir: Path, settings: Settings | None = None, *, build: LoadedIndex | None = None,
                 writable: bool = False) -> None:
        self.index_dir = index_dir
        self._settings = settings
        self._writable = writable
        self._build = build  # the committed build readers see; loaded on first use when writable
        self._name = build.name if build else None
        self._base: Manifest | None = build.manifest if build else None
        self._base_error: IndexStoreError | None = None
        self._work: _WorkingSet | None = None  # what the next commit writes (writable only)

    @classmethod
    def open(cls, settings: Settings, *, writable: bool = False, check: bool = True) -> FaissStore:
        """The build in use, loaded and (unless `check` is False) checked against the settings;
        or, writable, a store starting from it."""
        if writable:
            writer = cls(settings.index_dir, settings, writable=True)
            writer._pin_current()
            return writer
        reader = cls(settings.index_dir, settings, build=faiss_folder.load(settings.index_dir))
        if check:
            from rag.embedding import canonical_model_id

            reader.check_compatible(
                canonical_model_id(settings.embedding_model), settings.chunk_tokens, settings.chunk_overlap
            )
        return reader

    @classmethod
    def status_manifest(cls, settings: Settings) -> Manifest:
        """The manifest of the build in use, read alone (no build is loaded nor checked)."""
        manifest = faiss_folder.read_manifest(settings.index_dir)
        if manifest is None:
            raise IndexNotFoundError(f"no index in {settings.index_dir}; run `rag index` to build it")
        return manifest

    @classmethod
    def location(cls, settings: Settings) -> str:
        return str(settings.index_dir)

    @classmethod
    def of(cls, build: LoadedIndex, index_dir: Path | None = None) -> FaissStore:
        """A read-only store over a build already loaded (see `faiss_folder.load`)."""
        return cls(index_dir or Path("."), build=build)

    # -- reading: the committed build ----------------------------------------------------------
    def manifest(self) -> Manifest:
        if self._base_error is not None:
            raise self._base_error
        if self._base is None:
            raise IndexNotFoundError(f"no index in {self.index_dir}; run `rag index` to build it")
        return self._base

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        build = self._committed()
        if build is None or not build.chunks or k <= 0:
            return []
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        scores, rows = build.faiss_index.search(query, min(k, len(build.chunks)))  # type: ignore[attr-defined]
        return [(build.chunks[r].id, float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def lexical_search(self, query: str, k: int) -> list[tuple[str, float]]:
        build = self._committed()
        if build is None or build.bm25 is None:
            return []
        return [(build.chunks[row].id, score) for row, score in search_bm25(build.bm25, query, k)]

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        build = self._require_committed()
        return [build.chunks[build.by_id[i]] for i in ids]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        build = self._require_committed()
        return build.vectors([build.by_id[i] for i in ids])

    def all_chunks(self) -> list[Chunk]:
        """Every chunk of the build, as held in memory (in the manifest's order)."""
        return self._require_committed().chunks

    def stale(self) -> bool:
        """Whether CURRENT names another build than the one this store reads."""
        return faiss_folder.current_build_name(self.index_dir) != self._name

    def stats(self) -> StoreStats:
        try:
            manifest = self.manifest()
        except IndexNotFoundError:
            return StoreStats(kind=self.kind, index_kind="flat", build=None, documents=0, chunks=0, dimension=0)
        parameters: dict[str, int | float | str] = dict(manifest.index_parameters)
        if manifest.index_recall is not None:
            parameters["recall_at_10"] = manifest.index_recall
        return StoreStats(
            kind=self.kind,
            index_kind=manifest.index_kind,
            build=self._name,
            documents=len(manifest.documents),
            chunks=manifest.chunk_count,
            dimension=manifest.dimension,
            parameters=parameters,
        )

    # -- writing -------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Remove the half-written folder a killed build may have left (only a write sweeps)."""
        faiss_folder.collect_garbage(self.index_dir)

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        self._require_writable()
        self._working().add(list(chunks), np.asarray(vectors, dtype=np.float32))

    def delete_documents(self, sources: Iterable[str]) -> int:
        self._require_writable()
        sources = set(sources)
        if self._work is None and (self._base is None or sources >= set(self._base.documents)):
            # Everything goes (a full rebuild): no need to read the old build, which may be damaged.
            self._work = _WorkingSet()
            return self._base.chunk_count if self._base else 0
        return self._working().delete(sources)

    def commit(self, manifest_fields: dict) -> Manifest:
        self._require_writable()
        assert self._settings is not None
        fields = dict(manifest_fields)
        documents = {rel: DocumentEntry.model_validate(e) for rel, e in fields["documents"].items()}
        fields["documents"] = dict(sorted(documents.items()))
        chunks, matrix = self._working().in_document_order(fields["documents"], int(fields["dimension"]))
        spec = faiss_index.choose(self._settings, len(chunks))
        index = faiss_index.build(matrix, spec)
        spec = faiss_index.tune(index, matrix, spec, self._settings.faiss_min_recall)
        if spec.recall is not None and spec.recall < self._settings.faiss_min_recall:
            log.warning(
                "the %s index finds only %.3f of the true 10 nearest chunks (RAG_FAISS_MIN_RECALL is %s) "
                "even at its highest search effort; use RAG_FAISS_INDEX=flat or raise RAG_FAISS_HNSW_M",
                spec.kind, spec.recall, self._settings.faiss_min_recall,
            )
        fields.update(index_kind=spec.kind, index_parameters=spec.parameters, index_recall=spec.recall)
        build = faiss_folder.write_build(self.index_dir, manifest_fields=fields, chunks=chunks, index=index)
        self._build, self._name, self._base, self._base_error = build, build.name, build.manifest, None
        self._work = _WorkingSet(chunks, matrix)
        return build.manifest

    # -- internals -----------------------------------------------------------------------------
    def _pin_current(self) -> None:
        """Read CURRENT once: the build this writer starts from, whatever happens to CURRENT."""
        self._name = faiss_folder.current_build_name(self.index_dir)
        if self._name is None:
            return
        try:
            self._base = faiss_folder.read_build_manifest(self.index_dir, self._name)
        except IndexStoreError as exc:
            self._base_error = exc  # nothing of it can be reused: the writer starts empty

    def _committed(self) -> LoadedIndex | None:
        if self._build is None and self._base is not None and self._name is not None:
            self._build = faiss_folder.load_build(self.index_dir, self._name)
        return self._build

    def _require_committed(self) -> LoadedIndex:
        build = self._committed()
        if build is None:
            self.manifest()  # raises the reason
            raise IndexNotFoundError(f"no index in {self.index_dir}; run `rag index` to build it")
        return build

    def _working(self) -> _WorkingSet:
        if self._work is None:
            build = self._committed()
            self._work = _WorkingSet(list(build.chunks), build.vectors()) if build else _WorkingSet()
        return self._work

    def _require_writable(self) -> None:
        if not self._writable:
            raise RagError("this index store was opened for reading; open it with writable=True to change it")


class _WorkingSet:
    """The chunks and vectors the next commit will write, in memory."""

    def __init__(self, chunks: list[Chunk] | None = None, matrix: np.ndarray | None = None) -> None:
        self.chunks: list[Chunk] = chunks or []
        self.blocks: list[np.ndarray] = [] if matrix is None or not len(matrix) else [matrix]
        self.ids: set[str] = {c.id for c in self.chunks}

    @property
    def dimension(self) -> int | None:
        return self.blocks[0].shape[1] if self.blocks else None

    def matrix(self, dimension: int) -> np.ndarray:
        if not self.blocks:
            return np.zeros((0, dimension), dtype=np.float32)
        if len(self.blocks) > 1:
            self.blocks = [np.concatenate(self.blocks)]
        return self.blocks[0]

    def add(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or len(vectors) != len(chunks):
            raise RagError(f"internal error: {len(vectors)} vectors for {len(chunks)} chunks")
        if not chunks:
            return
        if self.dimension is not None and vectors.shape[1] != self.dimension:
            raise IndexMismatchError(
                f"vectors of {vectors.shape[1]} dimensions cannot join an index of {self.dimension}; "
                "run `rag index --force` to rebuild it with one embedding model"
            )
        duplicates = self.ids.intersection(c.id for c in chunks)
        if duplicates or len({c.id for c in chunks}) != len(chunks):
            raise RagError(f"internal error: chunk ids added twice ({sorted(duplicates)[:3]})")
        self.chunks.extend(chunks)
        self.ids.update(c.id for c in chunks)
        self.blocks.append(np.ascontiguousarray(vectors, dtype=np.float32))

    def delete(self, sources: set[str]) -> int:
        keep = [i for i, c in enumerate(self.chunks) if c.source not in sources]
        removed = len(self.chunks) - len(keep)
        if removed:
            matrix = self.matrix(0)
            self.chunks = [self.chunks[i] for i in keep]
            self.blocks = [matrix[keep]] if keep else []
            self.ids = {c.id for c in self.chunks}
        return removed

    def in_document_order(self, documents: dict[str, DocumentEntry], dimension: int) -> tuple[list[Chunk], np.ndarray]:
        """Chunks and vectors ordered as the manifest lists them, so a build's rows do not depend
        on the order of incremental changes; the manifest must list exactly the chunks held."""
        listed = [cid for entry in documents.values() for cid in entry.chunk_ids]
        if len(listed) != len(self.ids) or set(listed) != self.ids:
            missing, extra = set(listed) - self.ids, self.ids - set(listed)
            raise RagError(
                f"internal error: the manifest lists {len(missing)} chunks the store does not hold "
                f"and leaves out {len(extra)} it holds"
            )
        if self.dimension is not None and self.dimension != dimension:
            raise IndexMismatchError(
                f"the vectors have {self.dimension} dimensions but the manifest says {dimension}; "
                "run `rag index --force` to rebuild"
            )
        row = {c.id: i for i, c in enumerate(self.chunks)}
        order = [row[cid] for cid in listed]
        matrix = self.matrix(dimension)
        return [self.chunks[i] for i in order], (matrix[order] if order else matrix)
