"""Writing a build, all in the builder's one transaction: the build lock, the chunks COPYed in,
and at commit the documents and a new current build row.

The lock is transaction-scoped (pg_advisory_xact_lock): it goes with the transaction, so a
builder killed half-way frees it as the server rolls its work back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from rag.errors import IndexStoreError
from rag.postgres.schema import CHUNK_COLUMNS, SCHEMA_VERSION
from rag.types import Chunk, DocumentEntry, Manifest

log = logging.getLogger(__name__)

LOCK_KEY = 0x7261675F696E6478  # "rag_indx": the advisory lock every builder takes
LOCK_TIMEOUT = 600.0
KEEP_BUILDS = 20  # build rows kept for `rag status`-style history once no document points at them

# What the store sets itself, whatever the caller's fields say.
_STORE_FIELDS = ("chunk_count", "files", "build_seconds", "built_at", "schema_version")

_UPSERT_DOCUMENT = (
    "INSERT INTO rag_documents (path, content_hash, kind, build) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (path) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
    "kind = EXCLUDED.kind, build = EXCLUDED.build "
    "WHERE (rag_documents.content_hash, rag_documents.kind) "
    "IS DISTINCT FROM (EXCLUDED.content_hash, EXCLUDED.kind)"
)


def take_lock(conn: Any, where: str, lock_timeout: float) -> None:
    """Take the build lock in the connection's transaction, waiting up to lock_timeout seconds
    for another builder (then psycopg's LockNotAvailable); a replica is refused."""
    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        conn.rollback()
        raise IndexStoreError(
            f"the database at {where} is a read-only replica: build the index on the "
            "primary and point readers at the replica"
        )
    if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        log.warning("another build is running in the database at %s; waiting for it", where)
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout * 1000)}ms",))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute("SELECT set_config('lock_timeout', '0', true)")
    conn.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")


def checked_matrix(chunks: Sequence[Chunk], vectors: np.ndarray) -> np.ndarray:
    """The vectors as float32 rows, one a chunk, all finite (else IndexStoreError)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(chunks):
        raise IndexStoreError(f"{len(chunks)} chunks came with vectors of shape {matrix.shape}")
    if len(chunks) and not np.all(np.isfinite(matrix)):
        raise IndexStoreError("a vector to store holds NaN or infinite values")
    return matrix


def copy_chunks(conn: Any, chunks: Sequence[Chunk], matrix: np.ndarray, vector_type: str) -> None:
    """COPY the chunks and their vectors into rag_chunks (binary: no text round trip)."""
    from psycopg import sql

    cur = conn.cursor()
    copy_sql = sql.SQL("COPY rag_chunks ({}, embedding) FROM STDIN (FORMAT BINARY)").format(sql.SQL(CHUNK_COLUMNS))
    with cur.copy(copy_sql) as copy:
        copy.set_types(["text", "text", "int4", "text"] + ["int4"] * 7 + ["text", vector_type])
        wrap = _half if vector_type == "halfvec" else (lambda v: v)
        for chunk, vec in zip(chunks, matrix):
            copy.write_row(
                (
                    chunk.id, chunk.source, chunk.ordinal, chunk.text, chunk.start_char,
                    chunk.end_char, chunk.start_line, chunk.end_line, chunk.page,
                    chunk.page_end, chunk.tokens, chunk.header, wrap(vec),
                )
            )


def split_fields(
    manifest_fields: dict, index_parameters: dict[str, int]
) -> tuple[dict[str, DocumentEntry], float, dict]:
    """The caller's manifest fields as (documents, seconds before commit, the other fields), the
    HNSW index and the driver versions added, what the store sets itself dropped."""
    fields = dict(manifest_fields)
    seconds = float(fields.pop("seconds", 0.0))
    documents = {
        path: DocumentEntry.model_validate(entry) for path, entry in fields.pop("documents", {}).items()
    }
    for name in _STORE_FIELDS:
        fields.pop(name, None)
    fields.update(index_kind="hnsw", index_parameters=index_parameters, index_recall=None)
    fields["library_versions"] = {**(fields.get("library_versions") or {}), **_driver_versions()}
    return documents, seconds, fields


def new_manifest(conn: Any, documents: dict[str, DocumentEntry], fields: dict, seconds: float) -> Manifest:
    """The build's manifest, once the chunks written match the documents it lists."""
    counts = dict(conn.execute("SELECT document, count(*) FROM rag_chunks GROUP BY document").fetchall())
    strays = sorted(set(counts) - set(documents))
    if strays:
        raise IndexStoreError(f"chunks were added for documents the build does not list: {', '.join(strays[:5])}")
    for path, entry in documents.items():
        if counts.get(path, 0) != len(entry.chunk_ids):
            raise IndexStoreError(
                f"{path}: the build lists {len(entry.chunk_ids)} chunks, the database holds {counts.get(path, 0)}"
            )
    server = conn.execute(
        "SELECT current_setting('server_version'), "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
    ).fetchone()
    versions = {**fields["library_versions"], "postgresql": server[0], "pgvector-extension": server[1]}
    return Manifest(
        **{**fields, "library_versions": versions},
        schema_version=SCHEMA_VERSION,
        chunk_count=sum(counts.values()),
        built_at=datetime.now(timezone.utc),
        build_seconds=round(seconds, 3),
        files={},
        documents=dict(sorted(documents.items())),
    )


def record(conn: Any, manifest: Manifest) -> int:
    """Write the build row (not yet current) and the documents; returns the build's id. The
    deferred foreign-key checks run here, so a chunk without its document fails now."""
    from psycopg.types.json import Jsonb

    stored = manifest.model_dump(mode="json", exclude={"documents", "chunk_count"})
    build = conn.execute(
        "INSERT INTO rag_builds (created_at, embedding_model, dimension, chunk_tokens, "
        "chunk_overlap, manifest) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (
            manifest.built_at, manifest.embedding_model, manifest.dimension, manifest.chunk_tokens,
            manifest.chunk_overlap, Jsonb(stored),
        ),
    ).fetchone()[0]
    documents = manifest.documents
    conn.execute("DELETE FROM rag_documents WHERE path <> ALL(%s)", (list(documents),))
    if documents:
        with conn.cursor() as cur:
            cur.executemany(_UPSERT_DOCUMENT, [(p, e.content_hash, e.kind, build) for p, e in documents.items()])
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return build


def make_current(conn: Any, build: int) -> None:
    """Point is_current at the build and drop old build rows nothing refers to (not committed)."""
    conn.execute("UPDATE rag_builds SET is_current = false WHERE is_current")
    conn.execute("UPDATE rag_builds SET is_current = true WHERE id = %s", (build,))
    conn.execute(
        "DELETE FROM rag_builds b WHERE NOT b.is_current AND b.id < %s "
        "AND NOT EXISTS (SELECT 1 FROM rag_documents d WHERE d.build = b.id)",
        (build - KEEP_BUILDS,),
    )


def _half(vec: np.ndarray) -> Any:
    from pgvector import HalfVector

    return HalfVector(vec)


def _driver_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("psycopg", "pgvector"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
