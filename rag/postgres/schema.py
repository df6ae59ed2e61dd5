"""The index's tables: created by the first build, stamped with SCHEMA_VERSION, and the embedding
column and its HNSW index kept in line with the embedding dimension and the settings.

    rag_builds     one row per commit; exactly one ``is_current``; the manifest's fixed fields
    rag_documents  path, content hash, kind, and the build that last wrote it
    rag_chunks     text, header, place in its document, embedding (vector or halfvec, HNSW
                   cosine index) and a generated ``tsv`` tsvector of the header and the text
                   (GIN index) for full-text search
"""

from __future__ import annotations

from typing import Any

from rag.errors import IndexMismatchError, IndexStoreError
from rag.postgres.connection import first_line

# 2: chunks carry a header (tables of format 1 are brought up to it by the next build, which
# then rebuilds every chunk: see rag.indexer.rebuild_reason).
SCHEMA_VERSION = 2
VECTOR_TYPES = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}

CHUNK_COLUMNS = (
    "id, document, ordinal, text, start_char, end_char, start_line, end_line, page, page_end, tokens, header"
)
# Full-text search reads a chunk under its header, as the embedding model does.
_TSV = "tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, header || ' ' || text)) STORED"

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
    header text NOT NULL DEFAULT '',
    embedding vector NOT NULL,
    tsv TSV
);
CREATE INDEX rag_chunks_document ON rag_chunks (document, ordinal);
CREATE INDEX rag_chunks_tsv ON rag_chunks USING gin (tsv);
""".replace("TSV", _TSV)

# Format 1 -> 2, in the build's transaction: a build that fails leaves the tables as they were.
_FROM_FORMAT_1 = """
ALTER TABLE rag_chunks ADD COLUMN header text NOT NULL DEFAULT '';
ALTER TABLE rag_chunks DROP COLUMN tsv;
ALTER TABLE rag_chunks ADD COLUMN tsv TSV;
CREATE INDEX rag_chunks_tsv ON rag_chunks USING gin (tsv);
UPDATE rag_schema SET version = 2;
""".replace("TSV", _TSV)

_INDEX_OPTIONS_SQL = "SELECT reloptions FROM pg_class WHERE oid = to_regclass('rag_chunks_embedding')"


def ensure_schema(conn: Any, where: str) -> None:
    """Create the tables (and the pgvector extension) in an empty database; refuse tables of
    another format."""
    import psycopg

    exists = conn.execute("SELECT to_regclass('rag_schema') IS NOT NULL").fetchone()[0]
    if exists:
        row = conn.execute("SELECT version FROM rag_schema").fetchone()
        version = row[0] if row else None
        if version == 1:
            conn.execute(_FROM_FORMAT_1)
            return
        if version != SCHEMA_VERSION:
            raise IndexMismatchError(
                f"the database at {where} holds index tables of format {version}, not "
                f"{SCHEMA_VERSION}: drop the rag_* tables (or use a new database) and run "
                "`rag index` with RAG_STORE=postgres"
            )
        return
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise IndexStoreError(
            f"the pgvector extension is not available in the database at {where} "
            f"({first_line(exc)}); install pgvector on the server, or have an administrator "
            "run CREATE EXTENSION vector in that database"
        ) from None
    conn.execute(_SCHEMA)
    conn.execute("INSERT INTO rag_schema (version) VALUES (%s)", (SCHEMA_VERSION,))


def index_options(conn: Any) -> list[str] | None:
    """The HNSW index's reloptions ("m=16", ...), or None when there is no such index."""
    row = conn.execute(_INDEX_OPTIONS_SQL).fetchone()
    return None if row is None else list(row[0] or ())


def ensure_embedding(
    conn: Any, where: str, dimension: int, *, vector_type: str, m: int, ef_construction: int, index: bool
) -> None:
    """Give the embedding column this dimension and type, and (with `index`) its HNSW index.

    A new dimension needs an empty table (a full rebuild deletes every document first); a new
    type (vector <-> halfvec) converts the stored vectors. Either, like new HNSW parameters,
    drops the index, and readers then wait for the build to commit: it happens only when those
    settings change. A missing index is built at commit, once every row is in (a first build
    or one after such a change): much faster than growing the graph row by row.
    """
    column, typmod = conn.execute(
        "SELECT format_type(atttypid, atttypmod), atttypmod FROM pg_attribute "
        "WHERE attrelid = 'rag_chunks'::regclass AND attname = 'embedding'"
    ).fetchone()
    options = index_options(conn)
    has_index = options is not None
    if column != f"{vector_type}({dimension})":
        _retype(conn, where, typmod, dimension, vector_type)
        has_index = False
    elif has_index and sorted(options) != sorted([f"m={int(m)}", f"ef_construction={int(ef_construction)}"]):
        conn.execute("DROP INDEX rag_chunks_embedding")
        has_index = False
    if index and not has_index:
        _create_index(conn, vector_type, m, ef_construction)


def _retype(conn: Any, where: str, typmod: int, dimension: int, vector_type: str) -> None:
    """Give the embedding column another dimension (an empty table only) or type, without index."""
    from psycopg import sql

    if typmod > 0 and typmod != dimension:
        if conn.execute("SELECT EXISTS (SELECT 1 FROM rag_chunks)").fetchone()[0]:
            raise IndexMismatchError(
                f"the index in the database at {where} holds {typmod}-dimension vectors, "
                f"not {dimension}: run `rag index --force` with RAG_STORE=postgres to rebuild it"
            )
    conn.execute("DROP INDEX IF EXISTS rag_chunks_embedding")
    conn.execute(
        sql.SQL("ALTER TABLE rag_chunks ALTER COLUMN embedding TYPE {t} USING embedding::{t}").format(
            t=sql.SQL(f"{vector_type}({dimension})")
        )
    )


def _create_index(conn: Any, vector_type: str, m: int, ef_construction: int) -> None:
    from psycopg import sql

    conn.execute(
        sql.SQL(
            "CREATE INDEX rag_chunks_embedding ON rag_chunks USING hnsw (embedding {ops}) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            ops=sql.SQL(VECTOR_TYPES[vector_type]),
            m=sql.Literal(int(m)),
            ef=sql.Literal(int(ef_construction)),
        )
    )


def parameters(vector_type: str, ef_search: int, options: list[str] | None) -> dict[str, int | float | str]:
    """The HNSW index's parameters as built (its reloptions), the vector type and ef_search."""
    out: dict[str, int | float | str] = {"vector_type": vector_type, "ef_search": ef_search}
    for option in options or ():
        name, _, value = option.partition("=")
        out[name] = int(value) if value.isdigit() else value
    return out
