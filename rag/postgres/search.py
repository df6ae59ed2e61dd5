"""The store's reads as SQL: nearest vectors, full-text matches, the two fused by reciprocal rank
in one statement, and chunks and vectors by id.

Every value reaches the server as a parameter; the only SQL text built at run time is the vector
type's name, taken from a fixed list (schema.VECTOR_TYPES).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rag.errors import IndexStoreError
from rag.postgres.connection import Connections
from rag.postgres.schema import CHUNK_COLUMNS, VECTOR_TYPES
from rag.types import Chunk, Hit

RRF_K = 60  # the retriever's constant, so hybrid ranks fuse the same way in SQL and in Python

_NEAREST_SQL = (
    "SELECT id, 1 - distance FROM (SELECT id, embedding <=> %(vec)s::{vtype} AS distance "
    "FROM rag_chunks ORDER BY embedding <=> %(vec)s::{vtype} LIMIT %(k)s) nearest "
    "ORDER BY distance, id"
)

_WORDS_SQL = (
    "SELECT c.id, ts_rank_cd(c.tsv, q) AS rank "
    "FROM rag_chunks c, websearch_to_tsquery('english', %(text)s) q "
    "WHERE c.tsv @@ q ORDER BY rank DESC, c.id LIMIT %(k)s"
)

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


def _vector_sql(template: str, vector_type: str, **parts: str) -> Any:
    from psycopg import sql

    if vector_type not in VECTOR_TYPES:
        raise IndexStoreError(f"unknown vector type {vector_type!r}")
    return sql.SQL(template).format(vtype=sql.SQL(vector_type), **{k: sql.SQL(v) for k, v in parts.items()})


def _query_vector(vector: np.ndarray) -> np.ndarray:
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(vec)):
        raise IndexStoreError("the query vector holds NaN or infinite values")
    return vec


def _plain(query: str) -> str:
    """The query as PostgreSQL text can hold it (no NUL characters)."""
    return query.replace("\x00", " ")


def chunk_of(row: Sequence[Any]) -> Chunk:
    """A Chunk from a row of CHUNK_COLUMNS."""
    cid, document, ordinal, text, sc, ec, sl, el, page, page_end, tokens, header = row
    return Chunk(
        id=cid, source=document, ordinal=ordinal, text=text, start_char=sc, end_char=ec,
        start_line=sl, end_line=el, page=page, page_end=page_end, tokens=tokens, header=header,
    )


def nearest(db: Connections, vector_type: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k chunks nearest the vector (cosine), ties in id order as the hybrid query puts them."""
    if k <= 0:
        return []
    query = _vector_sql(_NEAREST_SQL, vector_type)
    rows = db.run(query, {"vec": _query_vector(vector), "k": int(k)}, ef_search=int(k))
    return [(cid, float(score)) for cid, score in rows]


def words(db: Connections, query: str, k: int) -> list[tuple[str, float]]:
    """The k best full-text matches (ts_rank_cd); nothing for a query of stop words only."""
    query = _plain(query)
    if k <= 0 or not query.strip():
        return []
    rows = db.run(_WORDS_SQL, {"text": query, "k": int(k)})
    return [(cid, float(score)) for cid, score in rows]


def hybrid(db: Connections, vector_type: str, vector: np.ndarray, query: str, k: int, depth: int | None) -> list[Hit]:
    """Up to k chunks, best first: the `depth` nearest vectors and `depth` best full-text
    matches fused by reciprocal rank, with each chunk's cosine (dense_score) and full-text rank
    (bm25_score), in one round trip."""
    if k <= 0:
        return []
    depth = max(int(depth or k), 1)
    query_sql = _vector_sql(_HYBRID_SQL, vector_type, columns=", ".join(f"c.{c}" for c in CHUNK_COLUMNS.split(", ")))
    rows = db.run(
        query_sql,
        {"vec": _query_vector(vector), "text": _plain(query), "depth": depth, "rrf": RRF_K, "k": int(k)},
        ef_search=depth,
    )
    return [
        Hit(
            chunk=chunk_of(row[3:]),
            score=round(float(row[0]), 6),
            dense_score=round(float(row[1]), 6),
            bm25_score=None if row[2] is None else round(float(row[2]), 6),
            rank=rank,
        )
        for rank, row in enumerate(rows, start=1)
    ]


def _missing(ids: list[str], found: dict) -> None:
    missing = [cid for cid in ids if cid not in found]
    if missing:
        raise KeyError(f"chunks not in the index (a rebuild replaced them?): {', '.join(missing[:5])}")


def chunks(db: Connections, ids: Sequence[str]) -> list[Chunk]:
    """The chunks with these ids, in this order; KeyError names any the build does not hold."""
    ids = list(ids)
    if not ids:
        return []
    rows = db.run(f"SELECT {CHUNK_COLUMNS} FROM rag_chunks WHERE id = ANY(%s)", (ids,))
    found = {row[0]: chunk_of(row) for row in rows}
    _missing(ids, found)
    return [found[cid] for cid in ids]


def vectors(db: Connections, ids: Sequence[str]) -> np.ndarray:
    """The stored vectors of these chunks, one row each (float32 whatever the column type)."""
    ids = list(ids)
    if not ids:
        return np.zeros((0, dimension(db) or 0), dtype=np.float32)
    rows = db.run("SELECT id, embedding::vector FROM rag_chunks WHERE id = ANY(%s)", (ids,))
    found = {cid: np.asarray(vec.to_numpy(), dtype=np.float32) for cid, vec in rows}
    _missing(ids, found)
    return np.stack([found[cid] for cid in ids])


def dimension(db: Connections) -> int | None:
    """The embedding column's dimension, None before the first build gives it one."""
    row = db.fetchone(
        "SELECT CASE WHEN atttypmod > 0 THEN atttypmod END FROM pg_attribute "
        "WHERE attrelid = to_regclass('rag_chunks') AND attname = 'embedding'"
    )
    return None if row is None else row[0]
