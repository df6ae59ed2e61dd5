"""PostgreSQL + pgvector as a shared index: many processes (and replicas) read, one builds at a time.

Tables (created by the first build, stamped with SCHEMA_VERSION in ``rag_schema``)::

    rag_builds     one row per commit; exactly one ``is_current``; the manifest's fixed fields
    rag_documents  path, content hash, kind, and the build that last wrote it
    rag_chunks     text, place in its document, embedding (vector or halfvec, HNSW cosine index)
                   and a generated ``tsv`` tsvector (GIN index) for full-text search

A build is one transaction: it takes a transaction-scoped advisory lock (one builder at a time),
deletes the chunks of changed and removed documents, COPYs the new ones in, updates the documents
and moves ``is_current``. Until COMMIT every reader sees the previous build; a builder killed
half-way leaves nothing behind, as the server rolls its transaction back.

Each read is one SQL statement, so it sees one build; ``snapshot()`` pins one build across several
reads, and ``hybrid_search`` does the whole hybrid retrieval (vector and full-text results fused by
reciprocal rank in SQL) in a single round trip. Every value reaches the server as a parameter; the
only SQL text built at run time is the vector type's name, taken from a fixed list.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.errors import (
    ConfigError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
)
from rag.types import Chunk, DocumentEntry, Hit, Manifest
from rag.vectorstore import StoreStats

if TYPE_CHECKING:
    from rag.config import Settings

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOCK_KEY = 0x7261675F696E6478  # "rag_indx": the advisory lock every builder takes
LOCK_TIMEOUT = 600.0
RRF_K = 60  # the retriever's constant, so hybrid ranks fuse the same way in SQL and in Python
KEEP_BUILDS = 20  # build rows kept for `rag status`-style history once no document points at them
MAX_IDLE_CONNECTIONS = 4
VECTOR_TYPES = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}

_CHUNK_COLUMNS = (
    "id, document, ordinal, text, start_char, end_char, start_line, end_line, page, page_end, tokens"
)

_SCHEMA = """
CREATE TABLE rag_schema (version integer NOT NULL);
CREATE TABLE rag_builds (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    embedding_model text NOT NULL,
    dimension integer NOT NULL,
    chunk_tokens integer NOT NULL,
    chunk_overlap integer NOT NULL,
    manifest jsonb NOT NULL,
    is_current boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX rag_builds_one_current ON rag_builds (is_current) WHERE is_current;
CREATE TABLE rag_documents (
    path text PRIMARY KEY,
    content_hash text NOT NULL,
    kind text NOT NULL,
    build bigint NOT NULL REFERENCES rag_builds (id)
);
-- Chunks are inserted before their document's row is written at commit: the check waits till then.
CREATE TABLE rag_chunks (
    id text PRIMARY KEY,
    document text NOT NULL
        REFERENCES rag_documents (path) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    ordinal integer NOT NULL,
    text text NOT NULL,
    start_char integer NOT NULL,
    end_char integer NOT NULL,
    start_line integer NOT NULL,
    end_line integer NOT NULL,
    page integer,
    page_end integer,
    tokens integer NOT NULL,
    embedding vector NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED
);
CREATE INDEX rag_chunks_document ON rag_chunks (document, ordinal);
CREATE INDEX rag_chunks_tsv ON rag_chunks USING gin (tsv);
"""

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

# Reciprocal rank fusion of the nearest vectors and the best full-text matches, in one statement.
_HYBRID_SQL = """
WITH dense AS MATERIALIZED (
    SELECT id, embedding <=> %(vec)s::{vtype} AS distance
      FROM rag_chunks
     ORDER BY embedding <=> %(vec)s::{vtype}
     LIMIT %(depth)s
),
dense_ranked AS (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM dense
),
lexical AS MATERIALIZED (
    SELECT c.id, ts_rank_cd(c.tsv, q) AS text_rank
      FROM rag_chunks c, websearch_to_tsquery('english', %(text)s) q
     WHERE c.tsv @@ q
     ORDER BY text_rank DESC, c.id
     LIMIT %(depth)s
),
lexical_ranked AS (
    SELECT id, text_rank, row_number() OVER (ORDER BY text_rank DESC, id) AS r FROM lexical
),
fused AS (
    SELECT coalesce(d.id, l.id) AS id,
           coalesce(1.0 / (%(rrf)s + d.r), 0) + coalesce(1.0 / (%(rrf)s + l.r), 0) AS score,
           l.text_rank
      FROM dense_ranked d FULL OUTER JOIN lexical_ranked l ON d.id = l.id
)
SELECT f.score, 1 - (c.embedding <=> %(vec)s::{vtype}) AS cosine, f.text_rank, {columns}
  FROM fused f JOIN rag_chunks c ON c.id = f.id
 ORDER BY f.score DESC, f.id
 LIMIT %(k)s
"""


class DatabaseUnavailableError(IndexStoreError):
    """The database named by RAG_DATABASE_URL cannot be reached or refused the connection."""


def describe_url(url: str) -> str:
    """The URL without its password, for messages: postgresql://user@host:port/dbname."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 (the parser's message may quote the URL, password included)
        return "(an unreadable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def _redact(text: str, url: str) -> str:
    """The text with the URL's password (if any) blanked out, even where the URL cannot be parsed."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:  # noqa: BLE001
        password = None
    if password:
        text = text.replace(str(password), "***")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _import_driver():
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError:
        raise ConfigError(
            "RAG_STORE=postgres needs the PostgreSQL driver: pip install 'rag[postgres]' "
            "(psycopg and pgvector)"
        ) from None
    return psycopg, register_vector


class PostgresStore:
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
        lock_timeout: float = LOCK_TIMEOUT,
        connect_timeout: float = 10.0,
    ) -> None:
        if vector_type not in VECTOR_TYPES:
            raise ConfigError(
                f"RAG_PG_VECTOR_TYPE: unknown type {vector_type!r}; choose one of {', '.join(VECTOR_TYPES)}"
            )
        self._psycopg, self._register_vector = _import_driver()
        self._url = url
        self.where = describe_url(url)
        self.writable = writable
        self.vector_type = vector_type
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef_search = hnsw_ef_search
        self.lock_timeout = lock_timeout
        self.connect_timeout = connect_timeout
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._writer: Any = None  # the builder's connection, inside its transaction while building
        self._building = False
        self._closed = False
        self._manifest_cache: tuple[str, Manifest] | None = None  # (build id, its manifest)

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        writable: bool = False,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> PostgresStore:
        """The store named by RAG_DATABASE_URL; writable takes the build lock (see `begin`)."""
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
            else:
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
        embedding model or chunking than the settings say; IndexNotFoundError when there is none."""
        row = self._fetchone(
            "SELECT embedding_model, chunk_tokens, chunk_overlap FROM rag_builds WHERE is_current"
        )
        if row is None:
            raise IndexNotFoundError(
                f"no index in the database at {self.where} (RAG_DATABASE_URL); "
                "run `rag index` with RAG_STORE=postgres to build it"
            )
        built_model, built_tokens, built_overlap = row
        problems = []
        if built_model != embedding_model:
            problems.append(
                f"it was embedded with {built_model!r} but RAG_EMBEDDING_MODEL is {embedding_model!r}"
            )
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

    # -- connections ---------------------------------------------------------------------------
    def _connect(self, *, autocommit: bool) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=autocommit,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name="rag-index" if not autocommit else "rag",
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to the database at {self.where} (RAG_DATABASE_URL): "
                f"{_redact(_first_line(exc), self._url)}. Start the server or fix RAG_DATABASE_URL"
            ) from None
        try:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.hnsw_ef_search),))
            if not autocommit:
                conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise self._translate(exc) from None
        conn._rag_vector = False  # vector types are registered once the extension exists
        conn._rag_ef_search = self.hnsw_ef_search
        if autocommit:
            self._register(conn, required=False)
        return conn

    def _register(self, conn: Any, *, required: bool) -> None:
        if conn._rag_vector:
            return
        try:
            self._register_vector(conn)
        except self._psycopg.ProgrammingError:
            if conn.info.transaction_status == self._psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            if required:
                raise
            return
        conn._rag_vector = True

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A connection for one read: the builder's own (it sees its unfinished build), the
        snapshot's, or one from the idle list."""
        if self._closed:
            raise IndexStoreError("the index store is closed")
        if self._building:
            yield self._writer
            return
        pinned = getattr(self._local, "conn", None)
        if pinned is not None:
            yield pinned
            return
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect(autocommit=True)
        self._register(conn, required=False)
        broken = False
        try:
            yield conn
        except self._psycopg.OperationalError:
            broken = True
            raise
        finally:
            if broken or conn.closed or conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
                conn.close()
            else:
                with self._pool_lock:
                    if len(self._idle) < MAX_IDLE_CONNECTIONS and not self._closed:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    def _run(self, query: Any, params: Any = None, *, ef_search: int = 0, fetch: str = "all") -> Any:
        """Execute one statement and fetch its rows, turning driver errors into RagErrors.

        A read on a dropped connection (server restarted, replica promoted) is tried once more on
        a fresh one; a builder's statements are not, since its transaction is gone with it.
        """
        psycopg = self._psycopg
        attempts = 1 if (self._building or getattr(self._local, "conn", None)) else 2
        for attempt in range(attempts):
            try:
                with self._reader() as conn:
                    if ef_search > conn._rag_ef_search:
                        conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef_search),))
                        conn._rag_ef_search = ef_search
                    cur = conn.execute(query, params)
                    if fetch == "one":
                        return cur.fetchone()
                    if fetch == "none":
                        return cur.rowcount
                    return cur.fetchall()
            except psycopg.OperationalError as exc:
                if attempt + 1 == attempts or not _is_disconnect(exc):
                    if self._building:
                        self._abandon()
                    raise self._translate(exc) from None
            except psycopg.Error as exc:
                if self._building:
                    self._abandon()  # the build's transaction failed: it cannot go on
                raise self._translate(exc) from None
        raise AssertionError("unreachable")

    def _fetchone(self, query: Any, params: Any = None) -> Any:
        return self._run(query, params, fetch="one")

    def _translate(self, exc: Exception) -> IndexStoreError:
        errors = self._psycopg.errors
        reason = _redact(_first_line(exc), self._url)
        if isinstance(exc, errors.UndefinedTable):
            return IndexNotFoundError(
                f"no index in the database at {self.where} (RAG_DATABASE_URL); "
                "run `rag index` with RAG_STORE=postgres to build it"
            )
        if isinstance(exc, errors.DataException) and "dimensions" in reason:
            return IndexMismatchError(
                f"the index in the database at {self.where} was built with another embedding "
                f"model ({reason}); run `rag index` with RAG_STORE=postgres to rebuild it, or "
                "restore the previous RAG_EMBEDDING_MODEL"
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return IndexStoreError(
                f"the database at {self.where} is read-only (a replica?): build the index on the "
                "primary and point readers at the replica"
            )
        if _is_disconnect(exc):
            return DatabaseUnavailableError(
                f"the database at {self.where} (RAG_DATABASE_URL) cannot be used: {reason}. "
                "Check that the server is running and reachable"
            )
        return IndexStoreError(f"the database at {self.where} refused an index operation: {reason}")

    @contextmanager
    def snapshot(self) -> Iterator[PostgresStore]:
        """Every read inside sees the same build, even if a rebuild commits meanwhile."""
        if self._building or getattr(self._local, "conn", None) is not None:
            yield self
            return
        conn = self._connect(autocommit=True)
        try:
            self._register(conn, required=False)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._local.conn = conn
            yield self
        finally:
            self._local.conn = None
            conn.close()  # ends the read-only transaction with it

    def close(self) -> None:
        """Roll back an unfinished build and close every connection."""
        self._closed = True
        writer, self._writer, self._building = self._writer, None, False
        if writer is not None:
            writer.close()  # closing without COMMIT rolls the build back and frees the lock
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown: nothing left to tell)
            pass

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, writable={self.writable})"

    # -- reading -------------------------------------------------------------------------------
    def _vector_sql(self, template: str, **parts: str) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(vtype=sql.SQL(self.vector_type), **{k: sql.SQL(v) for k, v in parts.items()})

    def current_build(self) -> str | None:
        """The id of the build readers see (cheap: poll it to notice a new build)."""
        try:
            row = self._fetchone("SELECT id FROM rag_builds WHERE is_current")
        except IndexNotFoundError:
            return None
        return None if row is None else str(row[0])

    def manifest(self) -> Manifest:
        """The manifest of the build in use; read in full once per build (it lists every chunk id),
        then answered from memory after a one-row check that the build is still the current one."""
        live = self._building or getattr(self._local, "conn", None) is not None
        cached = self._manifest_cache
        if not live and cached is not None and self.current_build() == cached[0]:
            return cached[1]
        row = self._fetchone(_MANIFEST_SQL)
        if row is None:
            raise IndexNotFoundError(
                f"no index in the database at {self.where} (RAG_DATABASE_URL); "
                "run `rag index` with RAG_STORE=postgres to build it"
            )
        build, fields, _created, chunk_count, documents = row
        manifest = Manifest.model_validate(
            {
                **fields,
                "chunk_count": chunk_count,
                "documents": {path: DocumentEntry.model_validate(d) for path, d in sorted(documents.items())},
            }
        )
        if not live:
            self._manifest_cache = (str(build), manifest)
        return manifest

    def _query_vector(self, vector: np.ndarray) -> np.ndarray:
        vec = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(vec)):
            raise IndexStoreError("the query vector holds NaN or infinite values")
        return vec

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        if k <= 0:
            return []
        # The index finds the k nearest; ties are then put in id order, as the hybrid query does.
        query = self._vector_sql(
            "SELECT id, 1 - distance FROM (SELECT id, embedding <=> %(vec)s::{vtype} AS distance "
            "FROM rag_chunks ORDER BY embedding <=> %(vec)s::{vtype} LIMIT %(k)s) nearest "
            "ORDER BY distance, id"
        )
        rows = self._run(query, {"vec": self._query_vector(vector), "k": int(k)}, ef_search=int(k))
        return [(cid, float(score)) for cid, score in rows]

    def lexical_search(self, query: str, k: int) -> list[tuple[str, float]]:
        query = _plain(query)
        if k <= 0 or not query.strip():
            return []
        rows = self._run(
            "SELECT c.id, ts_rank_cd(c.tsv, q) AS rank "
            "FROM rag_chunks c, websearch_to_tsquery('english', %(text)s) q "
            "WHERE c.tsv @@ q ORDER BY rank DESC, c.id LIMIT %(k)s",
            {"text": query, "k": int(k)},
        )
        return [(cid, float(score)) for cid, score in rows]

    def hybrid_search(self, vector: np.ndarray, query: str, k: int, *, depth: int | None = None) -> list[Hit]:
        """Up to k chunks, best first: the `depth` nearest vectors and `depth` best full-text
        matches fused by reciprocal rank, with each chunk's cosine (dense_score) and full-text
        rank (bm25_score: ts_rank_cd, BM25-like), in one round trip."""
        if k <= 0:
            return []
        depth = max(int(depth or k), 1)
        query_sql = self._vector_sql(_HYBRID_SQL, columns=", ".join(f"c.{c}" for c in _CHUNK_COLUMNS.split(", ")))
        rows = self._run(
            query_sql,
            {"vec": self._query_vector(vector), "text": _plain(query), "depth": depth, "rrf": RRF_K, "k": int(k)},
            ef_search=depth,
        )
        return [
            Hit(
                chunk=_chunk(row[3:]),
                score=round(float(row[0]), 6),
                dense_score=round(float(row[1]), 6),
                bm25_score=None if row[2] is None else round(float(row[2]), 6),
                rank=rank,
            )
            for rank, row in enumerate(rows, start=1)
        ]

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        ids = list(ids)
        if not ids:
            return []
        rows = self._run(f"SELECT {_CHUNK_COLUMNS} FROM rag_chunks WHERE id = ANY(%s)", (ids,))
        found = {row[0]: _chunk(row) for row in rows}
        missing = [cid for cid in ids if cid not in found]
        if missing:
            raise KeyError(f"chunks not in the index (a rebuild replaced them?): {', '.join(missing[:5])}")
        return [found[cid] for cid in ids]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        ids = list(ids)
        if not ids:
            return np.zeros((0, self._dimension() or 0), dtype=np.float32)
        rows = self._run("SELECT id, embedding::vector FROM rag_chunks WHERE id = ANY(%s)", (ids,))
        found = {cid: np.asarray(vec.to_numpy(), dtype=np.float32) for cid, vec in rows}
        missing = [cid for cid in ids if cid not in found]
        if missing:
            raise KeyError(f"chunks not in the index (a rebuild replaced them?): {', '.join(missing[:5])}")
        return np.stack([found[cid] for cid in ids])

    def _dimension(self) -> int | None:
        row = self._fetchone(
            "SELECT CASE WHEN atttypmod > 0 THEN atttypmod END FROM pg_attribute "
            "WHERE attrelid = to_regclass('rag_chunks') AND attname = 'embedding'"
        )
        return None if row is None else row[0]

    def stats(self) -> StoreStats:
        """Counts of the build in use (from its manifest, cheap once read; counted while building)."""
        if not self._building and getattr(self._local, "conn", None) is None:
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
        row = self._fetchone(
            "SELECT (SELECT id FROM rag_builds WHERE is_current), "
            "(SELECT dimension FROM rag_builds WHERE is_current), "
            "(SELECT count(*) FROM rag_documents), (SELECT count(*) FROM rag_chunks), "
            "(SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding'))"
        )
        build, dimension, documents, chunks, options = row
        return StoreStats(
            kind=self.kind,
            index_kind="hnsw",
            build=None if build is None else str(build),
            documents=documents,
            chunks=chunks,
            dimension=dimension or self._dimension() or 0,
            parameters=self._parameters(options),
        )

    def _parameters(self, options: Any = False) -> dict[str, int | float | str]:
        """The HNSW index's parameters as built (its reloptions), the vector type and ef_search."""
        if options is False:
            row = self._fetchone("SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding')")
            options = row[0] if row else None
        parameters: dict[str, int | float | str] = {"vector_type": self.vector_type, "ef_search": self.hnsw_ef_search}
        for option in options or ():
            name, _, value = option.partition("=")
            parameters[name] = int(value) if value.isdigit() else value
        return parameters

    # -- building ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a build: one transaction holding the advisory build lock (waits up to
        lock_timeout for another builder, then IndexLockedError), with the tables in place."""
        if not self.writable:
            raise IndexStoreError("this index store was opened read-only; open it writable to build")
        if self._building:
            return
        psycopg = self._psycopg
        if self._writer is None or self._writer.closed:
            self._writer = self._connect(autocommit=False)
        conn = self._writer
        try:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                conn.rollback()
                raise IndexStoreError(
                    f"the database at {self.where} is a read-only replica: build the index on the "
                    "primary and point readers at the replica"
                )
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                log.warning("another build is running in the database at %s; waiting for it", self.where)
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(self.lock_timeout * 1000)}ms",))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                conn.execute("SELECT set_config('lock_timeout', '0', true)")
            conn.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")
            self._ensure_schema(conn)
            self._register(conn, required=True)
        except psycopg.errors.LockNotAvailable:
            self._abandon()
            raise IndexLockedError(
                f"another `rag index` has held the build lock of the database at {self.where} for "
                f"{self.lock_timeout:.0f}s; wait for it or stop it"
            ) from None
        except psycopg.Error as exc:
            self._abandon()
            raise self._translate(exc) from None
        except BaseException:
            self._abandon()
            raise
        self._building = True

    def _abandon(self) -> None:
        writer, self._writer, self._building = self._writer, None, False
        if writer is not None:
            writer.close()

    def _ensure_schema(self, conn: Any) -> None:
        exists = conn.execute("SELECT to_regclass('rag_schema') IS NOT NULL").fetchone()[0]
        if exists:
            row = conn.execute("SELECT version FROM rag_schema").fetchone()
            version = row[0] if row else None
            if version != SCHEMA_VERSION:
                raise IndexMismatchError(
                    f"the database at {self.where} holds index tables of format {version}, not "
                    f"{SCHEMA_VERSION}: drop the rag_* tables (or use a new database) and run "
                    "`rag index` with RAG_STORE=postgres"
                )
            return
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except self._psycopg.Error as exc:
            raise IndexStoreError(
                f"the pgvector extension is not available in the database at {self.where} "
                f"({_first_line(exc)}); install pgvector on the server, or have an administrator "
                "run CREATE EXTENSION vector in that database"
            ) from None
        conn.execute(_SCHEMA)
        conn.execute("INSERT INTO rag_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def _ensure_embedding(self, dimension: int, *, index: bool) -> None:
        """Give the embedding column this dimension and the configured type, and (with `index`)
        its HNSW index.

        A new dimension needs an empty table (a full rebuild deletes every document first); a new
        type (vector <-> halfvec) converts the stored vectors. Either, like new HNSW parameters,
        drops the index, and readers then wait for the build to commit: it happens only when those
        settings change. A missing index is built at commit, once every row is in (a first build
        or one after such a change): much faster than growing the graph row by row.
        """
        from psycopg import sql

        conn = self._writer
        column, typmod = conn.execute(
            "SELECT format_type(atttypid, atttypmod), atttypmod FROM pg_attribute "
            "WHERE attrelid = 'rag_chunks'::regclass AND attname = 'embedding'"
        ).fetchone()
        wanted = f"{self.vector_type}({dimension})"
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding')"
        ).fetchone()
        wanted_options = sorted([f"m={int(self.hnsw_m)}", f"ef_construction={int(self.hnsw_ef_construction)}"])
        if column != wanted:
            if typmod > 0 and typmod != dimension:
                if conn.execute("SELECT EXISTS (SELECT 1 FROM rag_chunks)").fetchone()[0]:
                    raise IndexMismatchError(
                        f"the index in the database at {self.where} holds {typmod}-dimension vectors, "
                        f"not {dimension}: run `rag index --force` with RAG_STORE=postgres to rebuild it"
                    )
            conn.execute("DROP INDEX IF EXISTS rag_chunks_embedding")
            conn.execute(
                sql.SQL("ALTER TABLE rag_chunks ALTER COLUMN embedding TYPE {t} USING embedding::{t}").format(
                    t=sql.SQL(wanted)
                )
            )
            options = None
        elif options is not None and sorted(options[0] or ()) != wanted_options:
            conn.execute("DROP INDEX rag_chunks_embedding")
            options = None
        if index and options is None:
            conn.execute(
                sql.SQL(
                    "CREATE INDEX rag_chunks_embedding ON rag_chunks USING hnsw (embedding {ops}) "
                    "WITH (m = {m}, ef_construction = {ef})"
                ).format(
                    ops=sql.SQL(VECTOR_TYPES[self.vector_type]),
                    m=sql.Literal(int(self.hnsw_m)),
                    ef=sql.Literal(int(self.hnsw_ef_construction)),
                )
            )

    def _write(self, query: Any, params: Any = None) -> Any:
        self.begin()
        try:
            return self._writer.execute(query, params)
        except self._psycopg.Error as exc:
            self._abandon()
            raise self._translate(exc) from None

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        chunks = list(chunks)
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(chunks):
            raise IndexStoreError(f"{len(chunks)} chunks came with vectors of shape {matrix.shape}")
        if not chunks:
            return
        if not np.all(np.isfinite(matrix)):
            raise IndexStoreError("a vector to store holds NaN or infinite values")
        self.begin()
        from psycopg import sql

        try:
            self._ensure_embedding(int(matrix.shape[1]), index=False)
            cur = self._writer.cursor()
            copy_sql = sql.SQL("COPY rag_chunks ({}, embedding) FROM STDIN (FORMAT BINARY)").format(
                sql.SQL(_CHUNK_COLUMNS)
            )
            with cur.copy(copy_sql) as copy:
                copy.set_types(["text", "text", "int4", "text"] + ["int4"] * 7 + [self.vector_type])
                wrap = _half if self.vector_type == "halfvec" else (lambda v: v)
                for chunk, vec in zip(chunks, matrix):
                    copy.write_row(
                        (
                            chunk.id, chunk.source, chunk.ordinal, chunk.text, chunk.start_char,
                            chunk.end_char, chunk.start_line, chunk.end_line, chunk.page,
                            chunk.page_end, chunk.tokens, wrap(vec),
                        )
                    )
        except self._psycopg.Error as exc:
            self._abandon()
            raise self._translate(exc) from None
        except BaseException:
            self._abandon()
            raise

    def delete_documents(self, sources: Iterable[str]) -> int:
        sources = sorted(set(sources))
        if not sources:
            self.begin()
            return 0
        return self._write("DELETE FROM rag_chunks WHERE document = ANY(%s)", (sources,)).rowcount

    def commit(self, manifest_fields: dict) -> Manifest:
        """Write the documents and a new current build, then COMMIT: readers switch at once."""
        fields = dict(manifest_fields)
        seconds = float(fields.pop("seconds", 0.0))
        documents: dict[str, DocumentEntry] = {
            path: DocumentEntry.model_validate(entry) for path, entry in fields.pop("documents", {}).items()
        }
        fields.pop("chunk_count", None)
        fields.pop("files", None)
        fields.pop("build_seconds", None)
        fields.pop("built_at", None)
        fields.pop("schema_version", None)
        fields.update(
            index_kind="hnsw",
            index_parameters={
                "m": int(self.hnsw_m),
                "ef_construction": int(self.hnsw_ef_construction),
                "ef_search": int(self.hnsw_ef_search),
            },
            index_recall=None,
        )
        versions = dict(fields.pop("library_versions", {}) or {})
        versions.update(_driver_versions())
        self.begin()
        psycopg = self._psycopg
        from psycopg.types.json import Jsonb

        conn = self._writer
        try:
            self._ensure_embedding(int(fields["dimension"]), index=False)
            counts = dict(conn.execute("SELECT document, count(*) FROM rag_chunks GROUP BY document").fetchall())
            strays = sorted(set(counts) - set(documents))
            if strays:
                raise IndexStoreError(
                    f"chunks were added for documents the build does not list: {', '.join(strays[:5])}"
                )
            for path, entry in documents.items():
                if counts.get(path, 0) != len(entry.chunk_ids):
                    raise IndexStoreError(
                        f"{path}: the build lists {len(entry.chunk_ids)} chunks, the database holds "
                        f"{counts.get(path, 0)}"
                    )
            server = conn.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            ).fetchone()
            versions.update({"postgresql": server[0], "pgvector-extension": server[1]})
            stamp = datetime.now(timezone.utc)
            manifest = Manifest(
                schema_version=SCHEMA_VERSION,
                chunk_count=sum(counts.values()),
                built_at=stamp,
                build_seconds=round(seconds, 3),
                files={},
                documents=dict(sorted(documents.items())),
                library_versions=versions,
                **fields,
            )
            stored = manifest.model_dump(mode="json", exclude={"documents", "chunk_count"})
            build = conn.execute(
                "INSERT INTO rag_builds (created_at, embedding_model, dimension, chunk_tokens, "
                "chunk_overlap, manifest) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    stamp, manifest.embedding_model, manifest.dimension, manifest.chunk_tokens,
                    manifest.chunk_overlap, Jsonb(stored),
                ),
            ).fetchone()[0]
            paths = list(documents)
            conn.execute("DELETE FROM rag_documents WHERE path <> ALL(%s)", (paths,))
            if documents:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO rag_documents (path, content_hash, kind, build) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (path) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
                        "kind = EXCLUDED.kind, build = EXCLUDED.build "
                        "WHERE (rag_documents.content_hash, rag_documents.kind) "
                        "IS DISTINCT FROM (EXCLUDED.content_hash, EXCLUDED.kind)",
                        [(p, e.content_hash, e.kind, build) for p, e in documents.items()],
                    )
            # The deferred checks run now (every chunk's document is written): an index may be built.
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            self._ensure_embedding(int(fields["dimension"]), index=True)
            conn.execute("UPDATE rag_builds SET is_current = false WHERE is_current")
            conn.execute("UPDATE rag_builds SET is_current = true WHERE id = %s", (build,))
            conn.execute(
                "DELETE FROM rag_builds b WHERE NOT b.is_current AND b.id < %s "
                "AND NOT EXISTS (SELECT 1 FROM rag_documents d WHERE d.build = b.id)",
                (build - KEEP_BUILDS,),
            )
            conn.commit()
        except psycopg.Error as exc:
            self._abandon()
            raise self._translate(exc) from None
        except BaseException:
            self._abandon()
            raise
        self._building = False
        return manifest

    def rollback(self) -> None:
        """Drop everything added and deleted since the last commit, and the build lock."""
        if self._building and self._writer is not None:
            self._writer.rollback()
        self._building = False


def _is_disconnect(exc: Exception) -> bool:
    """Whether the connection itself failed (lost, refused, server shutting down), not a statement."""
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def _plain(query: str) -> str:
    """The query as PostgreSQL text can hold it (no NUL characters)."""
    return query.replace("\x00", " ")


def _half(vec: np.ndarray) -> Any:
    from pgvector import HalfVector

    return HalfVector(vec)


def _chunk(row: Sequence[Any]) -> Chunk:
    cid, document, ordinal, text, sc, ec, sl, el, page, page_end, tokens = row
    return Chunk(
        id=cid, source=document, ordinal=ordinal, text=text, start_char=sc, end_char=ec,
        start_line=sl, end_line=el, page=page, page_end=page_end, tokens=tokens,
    )


def _driver_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("psycopg", "pgvector"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
