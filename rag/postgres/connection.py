"""Connections to the index database: the URL (never its password) in messages, driver errors
turned into RagErrors, and the connections a store uses.

A builder has one connection of its own, inside its transaction from `begin` to `commit` (its
advisory lock goes with that transaction). Every read borrows a connection from a pool
(psycopg_pool): one statement, or a snapshot's read-only transaction pinned to its thread. A read
whose connection the server dropped is tried once more on a fresh one.
"""

from __future__ import annotations

import re
import threading
import weakref
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

# Reads borrow one of at most this many pooled connections (one stays open between reads); a read
# that waits connect_timeout for one gets a connection of its own, as a stopped server's reason does.
POOL_SIZE = 8


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


def import_driver() -> tuple[Any, Any, Any]:
    """psycopg, pgvector's type registration and psycopg_pool, or a ConfigError saying what to install."""
    try:
        import psycopg
        import psycopg_pool
        from pgvector.psycopg import register_vector
    except ImportError:
        raise ConfigError(
            "RAG_STORE=postgres needs the PostgreSQL driver: pip install 'rag[postgres]' "
            "(psycopg, psycopg-pool and pgvector)"
        ) from None
    return psycopg, register_vector, psycopg_pool


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
    """One store's connections: the builder's, and a pool for reads (a snapshot pins one)."""

    def __init__(self, url: str, *, ef_search: int, connect_timeout: float) -> None:
        self.psycopg, self._register_vector, self._pools = import_driver()
        self.url = url
        self.where = describe_url(url)
        self.ef_search = ef_search
        self.connect_timeout = connect_timeout
        self.writer: Any = None  # the builder's connection, inside its transaction while building
        self.building = False
        self.closed = False
        self._pool: Any = None  # opened by the first read
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        # hnsw.ef_search as each connection's session has it: raised for a deeper search, never lowered.
        self._ef_search: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._ef_lock = threading.Lock()

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

    def _dial(self, *, autocommit: bool, application_name: str) -> Any:
        """A bare connection, or DatabaseUnavailableError saying why not (without the password)."""
        try:
            return self.psycopg.connect(
                self.url,
                autocommit=autocommit,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name=application_name,
            )
        except self.psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to the database at {self.where} (RAG_DATABASE_URL): "
                f"{redact(first_line(exc), self.url)}. Start the server or fix RAG_DATABASE_URL"
            ) from None

    def connect(self, *, autocommit: bool) -> Any:
        """A connection of its own (the builder's, or a read's when the pool cannot give one)."""
        conn = self._dial(autocommit=autocommit, application_name="rag" if autocommit else "rag-index")
        try:
            self._configure(conn)
        except self.psycopg.Error as exc:
            conn.close()
            raise self.translate(exc) from None
        return conn

    def _configure(self, conn: Any) -> None:
        """A new connection's session: the HNSW search effort, and the vector types once the
        extension exists (a read's connection; the builder registers them after creating it)."""
        self._set_ef_search(conn, self.ef_search)
        if not conn.autocommit:
            conn.commit()
        else:
            self.register(conn, required=False)

    def _set_ef_search(self, conn: Any, value: int) -> None:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(value),))
        with self._ef_lock:
            self._ef_search[conn] = value

    def register(self, conn: Any, *, required: bool) -> None:
        """Teach the connection pgvector's types, unless it knows them or (not required) the
        extension does not exist yet: a later read tries again."""
        if conn.adapters.types.get("vector") is not None:
            return
        try:
            self._register_vector(conn)
        except self.psycopg.ProgrammingError:
            if conn.info.transaction_status == self.psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            if required:
                raise

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

    def _readers(self) -> Any:
        """The pool of read connections. The first read connects once on its own first, so a wrong
        URL or a stopped server is reported at once, with its reason, not after a pool's wait."""
        with self._pool_lock:
            if self.closed:
                raise IndexStoreError("the index store is closed")
            if self._pool is None:
                self._dial(autocommit=True, application_name="rag-check").close()
                pool = self._pools.ConnectionPool(
                    self.url,
                    kwargs={"autocommit": True, "connect_timeout": max(1, int(self.connect_timeout)),
                            "application_name": "rag"},
                    min_size=1, max_size=POOL_SIZE, configure=self._configure, timeout=self.connect_timeout,
                    name="rag", num_workers=1, open=False,
                )
                try:
                    pool.open(wait=True, timeout=self.connect_timeout)
                except self._pools.PoolTimeout:
                    pool.close()
                    raise DatabaseUnavailableError(
                        f"the database at {self.where} (RAG_DATABASE_URL) accepted one connection, then "
                        f"none for {self.connect_timeout:.0f}s. Check that the server is running and reachable"
                    ) from None
                self._pool = pool
            return self._pool

    @contextmanager
    def _borrowed(self, *, fresh: bool = False) -> Iterator[Any]:
        """A pooled connection for one read, or (`fresh`, or when none came free within
        connect_timeout) one of its own, closed after."""
        pool = self._readers()
        conn = None
        if not fresh:
            try:
                conn = pool.getconn()
            except self._pools.PoolTimeout:
                conn = None
        if conn is None:
            conn = self.connect(autocommit=True)
            try:
                yield conn
            finally:
                conn.close()
            return
        try:
            self.register(conn, required=False)
            yield conn
        finally:
            pool.putconn(conn)  # the pool drops it if the server closed it

    @contextmanager
    def reader(self, *, fresh: bool = False) -> Iterator[Any]:
        """A connection for one read: the builder's own (it sees its unfinished build), the
        snapshot's, or a pooled one (`fresh`: a new one)."""
        if self.closed:
            raise IndexStoreError("the index store is closed")
        if self.building:
            yield self.writer
            return
        if self.pinned is not None:
            yield self.pinned
            return
        with self._borrowed(fresh=fresh) as conn:
            yield conn

    def run(self, query: Any, params: Any = None, *, ef_search: int = 0, fetch: str = "all") -> Any:
        """Execute one statement and fetch its rows, turning driver errors into RagErrors.

        A read on a dropped connection (server restarted, replica promoted) is tried once more on
        a fresh one; a builder's statements are not, since its transaction is gone with it.
        """
        psycopg = self.psycopg
        attempts = 1 if self.live else 2
        for attempt in range(attempts):
            try:
                with self.reader(fresh=attempt > 0) as conn:
                    with self._ef_lock:
                        current = self._ef_search.get(conn, self.ef_search)
                    if ef_search > current:
                        self._set_ef_search(conn, ef_search)
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
        """Every read inside, on this thread, sees the same build: one pooled connection held in
        a read-only repeatable-read transaction, ended (and the connection returned) after."""
        if self.live:
            yield
            return
        with self._borrowed() as conn:
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except self.psycopg.Error as exc:
                raise self.translate(exc) from None
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None
                try:
                    conn.execute("ROLLBACK")  # read only: nothing to keep
                except self.psycopg.Error:
                    pass  # a connection the server dropped: the pool discards it

    def close(self) -> None:
        """Roll back an unfinished build and close every connection."""
        self.closed = True
        writer, self.writer, self.building = self.writer, None, False
        if writer is not None:
            writer.close()  # closing without COMMIT rolls the build back and frees the lock
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
