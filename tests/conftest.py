"""Shared fixtures: no network, no stray RAG_* settings, settings and corpora built under tmp_path."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["conftest_pg"]  # a real PostgreSQL server for the RAG_STORE=postgres tests

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = REPO_ROOT / "seeds"

# Nothing in the test run may reach a hub: the packaged model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class NetworkBlockedError(OSError):
    """Raised by the test suite when code tries to leave the machine."""


def _is_local(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if not isinstance(host, str):
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS and the network


@pytest.fixture(scope="session", autouse=True)
def _block_network():
    """Make connecting to any non-loopback address raise, for the whole session (Haystack-style)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise NetworkBlockedError(f"network access blocked in tests: connect to {address!r}")

    def connect(self, address):
        guard(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(self, address)
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        yield


@pytest.fixture(autouse=True)
def _clean_rag_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RAG_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty tmp_path, so no `.env` of the developer is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_settings(in_tmp: Path) -> Callable[..., object]:
    """Settings for a seeds/index pair under tmp_path, with the hashing embedder unless told."""
    from rag.config import Settings

    def make(**overrides: object):
        values: dict[str, object] = {
            "seeds_dir": in_tmp / "seeds",
            "index_dir": in_tmp / "index",
            "embedding_model": "hashing-256",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def seeds_copy(in_tmp: Path) -> Path:
    """A private copy of the repository's seeds folder at tmp_path/seeds."""
    target = in_tmp / "seeds"
    shutil.copytree(SEEDS_DIR, target)
    return target


@pytest.fixture
def hashing_embedder():
    from rag.embedding import HashingEmbedder

    return HashingEmbedder(256)


@pytest.fixture(scope="session")
def real_embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per session (network blocked)."""
    from rag.config import DEFAULT_EMBEDDING_MODEL
    from rag.embedding import get_embedder

    return get_embedder(DEFAULT_EMBEDDING_MODEL)


class CountingEmbedder:
    """Wraps an embedder and counts the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.calls: list[list[str]] = []

    @property
    def texts_embedded(self) -> int:
        return sum(len(batch) for batch in self.calls)

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)

    def embed(self, texts, *, batch_size: int = 32, progress: bool = False):
        self.calls.append(list(texts))
        return self.inner.embed(texts, batch_size=batch_size, progress=progress)


@pytest.fixture
def counting_embedder(hashing_embedder) -> CountingEmbedder:
    return CountingEmbedder(hashing_embedder)


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, one page per list of lines, Helvetica text (no reportlab needed)."""
    objects: list[bytes] = []
    n = len(pages)
    font_id = 3 + 2 * n
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture
def pdf_bytes() -> Callable[[list[list[str]]], bytes]:
    return make_pdf


def rag_command() -> list[str]:
    """How to run the `rag` CLI in a subprocess with this interpreter."""
    import sys

    script = Path(sys.executable).with_name("rag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rag.cli"]


@pytest.fixture
def rag_cmd() -> list[str]:
    return rag_command()


@pytest.fixture
def cli_env(in_tmp: Path) -> dict[str, str]:
    """Environment for `rag` subprocesses: no RAG_* from the shell, hashing model, offline."""
    # COLUMNS/LINES dropped so output is formatted as it is for a redirected stream.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k not in ("COLUMNS", "LINES")
    }
    env.update(
        RAG_EMBEDDING_MODEL="hashing-256",
        RAG_SEEDS_DIR=str(in_tmp / "seeds"),
        RAG_INDEX_DIR=str(in_tmp / "index"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env
