"""PostgresStore: the ReadableStore / WritableStore protocol over one PostgreSQL database.

It keeps the state (settings, connections, the manifest read last) and leaves the SQL to its
neighbours: connection.py, schema.py, search.py, build.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from rag.errors import ConfigError, IndexLockedError, IndexMismatchError, IndexNotFoundError, IndexStoreError
from rag.postgres import build, search
from rag.postgres.connection import Connections, no_index
from rag.postgres.schema import SCHEMA_VERSION, VECTOR_TYPES, ensure_embedding, ensure_schema, parameters
from rag.types import Chunk, DocumentEntry, Hit, Manifest
from rag.vectorstore import BaseStore, StoreStats

if TYPE_CHECKING:
    from rag.config import Settings

# The manifest as readers see it, assembled from the three tables in one statement (one snapshot).
_MANIFEST_SQL = """
SELECT b.id, b.manifest, b.created_at,
       (SELECT count(*) FROM rag_chunks),
       (SELECT coalesce(jsonb_object_agg(d.path, jsonb_build_object(
                   'path', d.path, 'content_hash', d.content_hash, 'kind', d.kind,
                   'chunk_ids', coalesce(c.ids, '[]'::jsonb))), '{}'::jsonb)
          FROM rag_documents d
          LEFT JOIN (SELECT document, jsonb_agg(id ORDER BY ordinal) AS ids
                       FROM rag_chunks GROUP BY document) c ON c.document = d.path)
  FROM rag_builds b WHERE b.is_current
"""

_COUNTS_SQL = (
    "SELECT (SELECT id FROM rag_builds WHERE is_current), "
    "(SELECT dimension FROM rag_builds WHERE is_current), "
    "(SELECT count(*) FROM rag_documents), (SELECT count(*) FROM rag_chunks), "
    "(SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding'))"
)


class PostgresStore(BaseStore):
    """A ReadableStore (and, opened writable, a WritableStore) over one PostgreSQL database."""

    kind = "postgres"
    schema_version = SCHEMA_VERSION

    def __init__(
        self,
        url: str,
        *,
        writable: bool = False,
        vector_type: str = "vector",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        hnsw_ef_search: int = 100,
        lock_timeout: float = build.LOCK_TIMEOUT,
        connect_timeout: float = 10.0,
    ) -> None:
        if vector_type not in VECTOR_TYPES:
            raise ConfigError(
                f"RAG_PG_VECTOR_TYPE: unknown type {vector_type!r}; choose one of {', '.join(VECTOR_TYPES)}"
            )
        self._db = Connections(url, ef_search=hnsw_ef_search, connect_timeout=connect_timeout)
        self.where = self._db.where
        self.writable = writable
        self.vector_type = vector_type
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef_search = hnsw_ef_search
        self.lock_timeout = lock_timeout
        self._manifest_cache: tuple[str, Manifest] | None = None  # (build id, its manifest)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, settings: Settings, *, writable: bool = False, check: bool = True,
        lock_timeout: float = build.LOCK_TIMEOUT,
    ) -> PostgresStore:
        """The store named by RAG_DATABASE_URL: writable, it takes the build lock (see `begin`);
        readable, it is checked against the settings unless `check` is False."""
        if settings.database_url is None or not settings.database_url.get_secret_value().strip():
            raise ConfigError(
                "RAG_STORE=postgres needs RAG_DATABASE_URL, e.g. "
                "postgresql://user:password@127.0.0.1:5432/rag (see .env.example)"
            )
        store = cls(
            settings.database_url.get_secret_value().strip(),
            writable=writable,
            vector_type=settings.pg_vector_type,
            hnsw_m=settings.pg_hnsw_m,
            hnsw_ef_construction=settings.pg_hnsw_ef_construction,
            hnsw_ef_search=settings.pg_hnsw_ef_search,
            lock_timeout=lock_timeout,
        )
        try:
            if writable:
                store.begin()
            elif check:
                from rag.embedding import canonical_model_id

                store.check_model(
                    canonical_model_id(settings.embedding_model), settings.chunk_tokens, settings.chunk_overlap
                )
        except BaseException:
            store.close()
            raise
        return store

    def check_model(
        self, embedding_model: str, chunk_tokens: int | None = None, chunk_overlap: int | None = None
    ) -> None:
        """IndexMismatchError (saying what to do) when the build in use was made with another
        embedding model or chunking than the settings say, or its tables are of an older format;
        IndexNotFoundError when there is none."""
        row = self._db.fetchone(
            "SELECT embedding_model, chunk_tokens, chunk_overlap, (SELECT max(version) FROM rag_schema) "
            "FROM rag_builds WHERE is_current"
        )
        if row is None:
            raise no_index(self.where)
        built_model, built_tokens, built_overlap, version = row
        if version != SCHEMA_VERSION:
            raise IndexMismatchError(
                f"the index in the database at {self.where} is of format {version}, not {SCHEMA_VERSION}: "
                "run `rag index` with RAG_STORE=postgres to rebuild it"
            )
        problems = []
        if built_model != embedding_model:
            problems.append(f"it was embedded with {built_model!r} but RAG_EMBEDDING_MODEL is {embedding_model!r}")
        if chunk_tokens is not None and (built_tokens, built_overlap) != (chunk_tokens, chunk_overlap):
            problems.append(
                f"it was chunked with RAG_CHUNK_TOKENS={built_tokens}, RAG_CHUNK_OVERLAP={built_overlap} "
                f"but the settings say {chunk_tokens}, {chunk_overlap}"
            )
        if problems:
            raise IndexMismatchError(
                f"the index in the database at {self.where} does not match the settings: "
                + "; ".join(problems)
                + ". Run `rag index` with RAG_STORE=postgres to rebuild it, or restore the "
                "previous settings"
            )

    def check_compatible(self, embedding_model: str, chunk_tokens: int, chunk_overlap: int) -> None:
        """See `check_model`: the build row and the tables' format, in one statement."""
        self.check_model(embedding_model, chunk_tokens, chunk_overlap)

    @contextmanager
    def snapshot(self) -> Iterator[PostgresStore]:
        """Every read inside sees the same build, even if a rebuild commits meanwhile."""
        with self._db.snapshot():
            yield self

    def close(self) -> None:
        """Roll back an unfinished build and close every connection."""
        self._db.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown, or a store never opened: nothing to tell)
            pass

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, writable={self.writable})"

    # -- reading -------------------------------------------------------------------------------
    def current_build(self) -> str | None:
        """The id of the build readers see (cheap: poll it to notice a new build)."""
        try:
            row = self._db.fetchone("SELECT id FROM rag_builds WHERE is_current")
        except IndexNotFoundError:
            return None
        return None if row is None else str(row[0])

    def manifest(self) -> Manifest:
        """The manifest of the build in use; read in full once per build (it lists every chunk id),
        then answered from memory after a one-row check that the build is still the current one."""
        live = self._db.live
        cached = self._manifest_cache
        if not live and cached is not None and self.current_build() == cached[0]:
            return cached[1]
        row = self._db.fetchone(_MANIFEST_SQL)
        if row is None:
            raise no_index(self.where)
        build_id, fields, _created, chunk_count, documents = row
        manifest = Manifest.model_validate(
            {
                **fields,
                "chunk_count": chunk_count,
                "documents": {path: DocumentEntry.model_validate(d) for path, d in sorted(documents.items())},
            }
        )
        if not live:
            self._manifest_cache = (str(build_id), manifest)
        return manifest

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return search.nearest(self._db, self.vector_type, vector, k)

    def lexical_search(self, query: str, k: int) -> list[tuple[str, float]]:
        return search.words(self._db, query, k)

    def hybrid_search(self, vector: np.ndarray, query: str, k: int, *, depth: int | None = None) -> list[Hit]:
        """Up to k chunks, best first: vector and full-text results fused by reciprocal rank in
        one round trip (see search.hybrid)."""
        return search.hybrid(self._db, self.vector_type, vector, query, k, depth)

    def ranked(self, vector: np.ndarray, query: str, depth: int, mode: str) -> list[Hit]:
        """As BaseStore ranks, but hybrid in one round trip (its fusion cut at depth)."""
        if mode == "hybrid":
            return self.hybrid_search(vector, query, depth)
        return super().ranked(vector, query, depth, mode)

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        return search.chunks(self._db, ids)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        return search.vectors(self._db, ids)

    def stats(self) -> StoreStats:
        """Counts of the build in use (from its manifest, cheap once read; counted while building)."""
        if not self._db.live:
            try:
                manifest = self.manifest()
            except IndexNotFoundError:
                manifest = None
            if manifest is not None and self._manifest_cache is not None:
                return StoreStats(
                    kind=self.kind,
                    index_kind="hnsw",
                    build=self._manifest_cache[0],
                    documents=len(manifest.documents),
                    chunks=manifest.chunk_count,
                    dimension=manifest.dimension,
                    parameters=self._parameters(),
                )
        build_id, dimension, documents, chunks, options = self._db.fetchone(_COUNTS_SQL)
        return StoreStats(
            kind=self.kind,
            index_kind="hnsw",
            build=None if build_id is None else str(build_id),
            documents=documents,
            chunks=chunks,
            dimension=dimension or search.dimension(self._db) or 0,
            parameters=self._parameters(options),
        )

    def _parameters(self, options: list[str] | None | bool = False) -> dict[str, int | float | str]:
        """The HNSW index's parameters as built (its reloptions), the vector type and ef_search."""
        if options is False:
            row = self._db.fetchone("SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding')")
            options = row[0] if row else None
        return parameters(self.vector_type, self.hnsw_ef_search, options or None)

    # -- building ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a build: one transaction holding the advisory build lock (waits up to
        lock_timeout for another builder, then IndexLockedError), with the tables in place."""
        if not self.writable:
            raise IndexStoreError("this index store was opened read-only; open it writable to build")
        db = self._db
        if db.building:
            return
        if db.writer is None or db.writer.closed:
            db.writer = db.connect(autocommit=False)
        with db.guarded() as conn:
            try:
                build.take_lock(conn, self.where, self.lock_timeout)
            except db.psycopg.errors.LockNotAvailable:
                raise IndexLockedError(
                    f"another `rag index` has held the build lock of the database at {self.where} for "
                    f"{self.lock_timeout:.0f}s; wait for it or stop it"
                ) from None
            ensure_schema(conn, self.where)
            db.register(conn, required=True)
        db.building = True

    def _ensure_embedding(self, dimension: int, *, index: bool) -> None:
        ensure_embedding(
            self._db.writer, self.where, dimension, vector_type=self.vector_type, m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction, index=index,
        )

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        chunks = list(chunks)
        matrix = build.checked_matrix(chunks, vectors)
        if not chunks:
            return
        self.begin()
        with self._db.guarded() as conn:
            self._ensure_embedding(int(matrix.shape[1]), index=False)
            build.copy_chunks(conn, chunks, matrix, self.vector_type)

    def delete_documents(self, sources: Iterable[str]) -> int:
        sources = sorted(set(sources))
        self.begin()
        if not sources:
            return 0
        with self._db.guarded() as conn:
            return conn.execute("DELETE FROM rag_chunks WHERE document = ANY(%s)", (sources,)).rowcount

    def commit(self, manifest_fields: dict) -> Manifest:
        """Write the documents and a new current build, then COMMIT: readers switch at once."""
        index_parameters = {
            "m": int(self.hnsw_m),
            "ef_construction": int(self.hnsw_ef_construction),
            "ef_search": int(self.hnsw_ef_search),
        }
        documents, seconds, fields = build.split_fields(manifest_fields, index_parameters)
        self.begin()
        with self._db.guarded() as conn:
            self._ensure_embedding(int(fields["dimension"]), index=False)
            manifest = build.new_manifest(conn, documents, fields, seconds)
            build_id = build.record(conn, manifest)
            # Every chunk's document is written and checked: the HNSW index may be built now.
            self._ensure_embedding(manifest.dimension, index=True)
            build.make_current(conn, build_id)
            conn.commit()
        self._db.building = False
        return manifest

    def rollback(self) -> None:
        """Drop everything added and deleted since the last commit, and the build lock."""
        if self._db.building and self._db.writer is not None:
            self._db.writer.rollback()
        self._db.building = False
