"""Connections to the index database: the URL (never its password) in messages, driver errors
turned into RagErrors, and the three kinds of connection a store uses.

A builder has one connection, inside its transaction from `begin` to `commit`; a snapshot pins one
read-only transaction to its thread; any other read borrows an idle connection (a few are kept)
and, when the server dropped it, is tried once more on a fresh one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rag.errors import (
    ConfigError,
    DatabaseUnavailableError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
)

MAX_IDLE_CONNECTIONS = 4


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


def redact(text: str, url: str) -> str:
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


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def import_driver() -> tuple[Any, Any]:
    """psycopg and pgvector's type registration, or a ConfigError saying what to install."""
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError:
        raise ConfigError(
            "RAG_STORE=postgres needs the PostgreSQL driver: pip install 'rag[postgres]' "
            "(psycopg and pgvector)"
        ) from None
    return psycopg, register_vector


def is_disconnect(exc: Exception) -> bool:
    """Whether the connection itself failed (lost, refused, server shutting down), not a statement."""
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))


def no_index(where: str) -> IndexNotFoundError:
    return IndexNotFoundError(
        f"no index in the database at {where} (RAG_DATABASE_URL); "
        "run `rag index` with RAG_STORE=postgres to build it"
    )


def translate(exc: Exception, where: str, url: str) -> IndexStoreError:
    """The RagError to show for a driver error, its message free of the password."""
    from psycopg import errors

    reason = redact(first_line(exc), url)
    if isinstance(exc, errors.UndefinedTable):
        return no_index(where)
    if isinstance(exc, errors.DataException) and "dimensions" in reason:
        return IndexMismatchError(
            f"the index in the database at {where} was built with another embedding "
            f"model ({reason}); run `rag index` with RAG_STORE=postgres to rebuild it, or "
            "restore the previous RAG_EMBEDDING_MODEL"
        )
    if isinstance(exc, errors.ReadOnlySqlTransaction):
        return IndexStoreError(
            f"the database at {where} is read-only (a replica?): build the index on the "
            "primary and point readers at the replica"
        )
    if is_disconnect(exc):
        return DatabaseUnavailableError(
            f"the database at {where} (RAG_DATABASE_URL) cannot be used: {reason}. "
            "Check that the server is running and reachable"
        )
    return IndexStoreError(f"the database at {where} refused an index operation: {reason}")


class Connections:
    """One store's connections: the builder's, a snapshot's (per thread) and the idle ones."""

    def __init__(self, url: str, *, ef_search: int, connect_timeout: float) -> None:
        self.psycopg, self._register_vector = import_driver()
        self.url = url
        self.where = describe_url(url)
        self.ef_search = ef_search
        self.connect_timeout = connect_timeout
        self.writer: Any = None  # the builder's connection, inside its transaction while building
        self.building = False
        self.closed = False
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._local = threading.local()

    @property
    def pinned(self) -> Any:
        """This thread's snapshot connection, if it is inside `snapshot()`."""
        return getattr(self._local, "conn", None)

    @property
    def live(self) -> bool:
        """Whether reads see a build in the making or a pinned one, not simply the current build."""
        return self.building or self.pinned is not None

    def translate(self, exc: Exception) -> IndexStoreError:
        return translate(exc, self.where, self.url)

    def connect(self, *, autocommit: bool) -> Any:
        psycopg = self.psycopg
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=autocommit,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name="rag-index" if not autocommit else "rag",
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to the database at {self.where} (RAG_DATABASE_URL): "
                f"{redact(first_line(exc), self.url)}. Start the server or fix RAG_DATABASE_URL"
            ) from None
        try:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.ef_search),))
            if not autocommit:
                conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise self.translate(exc) from None
        conn._rag_vector = False  # vector types are registered once the extension exists
        conn._rag_ef_search = self.ef_search
        if autocommit:
            self.register(conn, required=False)
        return conn

    def register(self, conn: Any, *, required: bool) -> None:
        if conn._rag_vector:
            return
        try:
            self._register_vector(conn)
        except self.psycopg.ProgrammingError:
            if conn.info.transaction_status == self.psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            if required:
                raise
            return
        conn._rag_vector = True

    def abandon(self) -> None:
        """End the build: its connection is closed, which rolls its transaction back."""
        writer, self.writer, self.building = self.writer, None, False
        if writer is not None:
            writer.close()

    @contextmanager
    def guarded(self) -> Iterator[Any]:
        """The builder's connection for some statements; any failure ends the build (its
        transaction cannot go on), a driver error raised as a RagError."""
        try:
            yield self.writer
        except self.psycopg.Error as exc:
            self.abandon()
            raise self.translate(exc) from None
        except BaseException:
            self.abandon()
            raise

    @contextmanager
    def reader(self) -> Iterator[Any]:
        """A connection for one read: the builder's own (it sees its unfinished build), the
        snapshot's, or one from the idle list."""
        if self.closed:
            raise IndexStoreError("the index store is closed")
        if self.building:
            yield self.writer
            return
        if self.pinned is not None:
            yield self.pinned
            return
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self.connect(autocommit=True)
        self.register(conn, required=False)
        broken = False
        try:
            yield conn
        except self.psycopg.OperationalError:
            broken = True
            raise
        finally:
            self._release(conn, broken)

    def _release(self, conn: Any, broken: bool) -> None:
        if broken or conn.closed or conn.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._pool_lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS and not self.closed:
                self._idle.append(conn)
                return
        conn.close()

    def run(self, query: Any, params: Any = None, *, ef_search: int = 0, fetch: str = "all") -> Any:
        """Execute one statement and fetch its rows, turning driver errors into RagErrors.

        A read on a dropped connection (server restarted, replica promoted) is tried once more on
        a fresh one; a builder's statements are not, since its transaction is gone with it.
        """
        psycopg = self.psycopg
        attempts = 1 if self.live else 2
        for attempt in range(attempts):
            try:
                with self.reader() as conn:
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
                if attempt + 1 == attempts or not is_disconnect(exc):
                    if self.building:
                        self.abandon()
                    raise self.translate(exc) from None
            except psycopg.Error as exc:
                if self.building:
                    self.abandon()  # the build's transaction failed: it cannot go on
                raise self.translate(exc) from None
        raise AssertionError("unreachable")

    def fetchone(self, query: Any, params: Any = None) -> Any:
        return self.run(query, params, fetch="one")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside, on this thread, sees the same build."""
        if self.live:
            yield
            return
        conn = self.connect(autocommit=True)
        try:
            self.register(conn, required=False)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._local.conn = conn
            yield
        finally:
            self._local.conn = None
            conn.close()  # ends the read-only transaction with it

    def close(self) -> None:
        """Roll back an unfinished build and close every connection."""
        self.closed = True
        writer, self.writer, self.building = self.writer, None, False
        if writer is not None:
            writer.close()  # closing without COMMIT rolls the build back and frees the lock
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
