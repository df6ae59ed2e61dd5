"""PostgreSQL + pgvector as a shared index: many processes (and replicas) read, one builds at a time.

A build is one transaction: it takes a transaction-scoped advisory lock (one builder at a time),
deletes the chunks of changed and removed documents, COPYs the new ones in, updates the documents
and moves ``is_current``. Until COMMIT every reader sees the previous build; a builder killed
half-way leaves nothing behind, as the server rolls its transaction back.

Each read is one SQL statement, so it sees one build; ``snapshot()`` pins one build across several
reads, and ``hybrid_search`` does the whole hybrid retrieval (vector and full-text results fused by
reciprocal rank in SQL) in a single round trip.

Modules, one role each:

    connection.py  the URL (never its password) in messages, driver errors as RagErrors, the
                   builder's connection and the readers' pool (psycopg_pool), one retry
                   after a dropped one
    schema.py      the tables, their format version, the embedding column and its HNSW index
    search.py      vector, full-text and hybrid SQL; chunks and vectors by id
    build.py       the build lock, COPY of new chunks, the documents and build row at commit
    store.py       PostgresStore, the protocol on top of them
"""

from rag.postgres.connection import describe_url
from rag.postgres.schema import SCHEMA_VERSION
from rag.postgres.store import PostgresStore

__all__ = ["PostgresStore", "SCHEMA_VERSION", "describe_url"]
