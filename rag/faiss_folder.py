"""The FAISS store's folder format: immutable build folders, an atomically swapped CURRENT
pointer, checksums; and the index folder's build lock, which every store's builder takes.

Layout::

    index/CURRENT                 name of the build in use (replaced with os.replace)
    index/builds/<name>/          manifest.json, vectors.faiss, chunks.jsonl, bm25/
    index/.lock                   held by whoever is building

A build is written to ``builds/.tmp-<name>``, fsynced, renamed, and only then does CURRENT move,
so a build killed at any moment leaves the previous one loadable and correct. `FaissStore`
(rag/faiss_store.py) is the vector store over these folders.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from rag.chunking import embedding_text
from rag.errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexNotFoundError
from rag.types import Chunk, Manifest

SCHEMA_VERSION = 1
CURRENT = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
CHUNKS = "chunks.jsonl"
BM25_DIR = "bm25"
KEEP_BUILDS = 2


@dataclass
class LoadedIndex:
    """A build read into memory; immutable once loaded, so readers never see a half-built one."""

    name: str
    manifest: Manifest
    chunks: list[Chunk]
    faiss_index: object
    bm25: object | None
    by_id: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {c.id: i for i, c in enumerate(self.chunks)}

    def vectors(self, rows: list[int] | None = None) -> np.ndarray:
        """The stored vectors of these rows (all rows by default), one row each."""
        n = len(self.chunks) if rows is None else len(rows)
        if n == 0:
            return np.zeros((0, self.manifest.dimension), dtype=np.float32)
        if rows is None:
            return self.faiss_index.reconstruct_n(0, n)  # type: ignore[attr-defined]
        return self.faiss_index.reconstruct_batch(np.asarray(rows, dtype=np.int64))  # type: ignore[attr-defined]


# -- naming and locating builds ------------------------------------------------------------------
def new_build_name() -> str:
    """A fresh build name; names sort in the order builds were started."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def build_folder(index_dir: Path, name: str) -> Path:
    """Where the build of this name lives; the one place that says so."""
    return index_dir / BUILDS / name


def current_build_name(index_dir: Path) -> str | None:
    try:
        name = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def read_manifest(index_dir: Path) -> Manifest | None:
    """The manifest of the build in use, or None when there is no index."""
    name = current_build_name(index_dir)
    if name is None:
        return None
    return read_build_manifest(index_dir, name)


def read_build_manifest(index_dir: Path, name: str) -> Manifest:
    """The manifest of one build, or IndexCorruptError saying how to repair it."""
    path = build_folder(index_dir, name) / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(
            f"index at {index_dir} points to build {name!r} which is missing; "
            "run `rag index --force` to rebuild"
        ) from None
    except ValueError as exc:
        raise IndexCorruptError(
            f"index manifest {path} cannot be read ({exc.__class__.__name__}); "
            "run `rag index --force` to rebuild"
        ) from None


# -- reading -------------------------------------------------------------------------------------
def load(index_dir: Path, *, verify: bool = True) -> LoadedIndex:
    """Read the build in use, checking every file against the manifest's checksums."""
    # CURRENT is read once: a build finishing meanwhile moves it, and the manifest and the files
    # must come from the same build.
    name = current_build_name(index_dir)
    if name is None:
        raise IndexNotFoundError(f"no index in {index_dir}; run `rag index` to build it")
    return load_build(index_dir, name, verify=verify)


def load_build(index_dir: Path, name: str, *, verify: bool = True) -> LoadedIndex:
    """Read one build by name (see `load`)."""
    manifest = read_build_manifest(index_dir, name)
    folder = build_folder(index_dir, name)
    if manifest.schema_version != SCHEMA_VERSION:
        raise IndexMismatchError(
            f"index format {manifest.schema_version} is not the supported format "
            f"{SCHEMA_VERSION}; run `rag index --force` to rebuild"
        )
    if verify:
        _verify(folder, manifest)
    try:
        chunks, index, bm25 = _read_files(folder, manifest)
    except Exception as exc:
        raise IndexCorruptError(
            f"index in {folder} cannot be read ({type(exc).__name__}: {exc}); "
            "run `rag index --force` to rebuild"
        ) from None
    if index.ntotal != len(chunks) or len(chunks) != manifest.chunk_count:
        raise IndexCorruptError(
            f"index in {folder} is inconsistent ({index.ntotal} vectors, {len(chunks)} chunks); "
            "run `rag index --force` to rebuild"
        )
    return LoadedIndex(name=name, manifest=manifest, chunks=chunks, faiss_index=index, bm25=bm25)


def _verify(folder: Path, manifest: Manifest) -> None:
    for rel, digest in manifest.files.items():
        path = folder / rel
        if not path.is_file() or _sha256(path) != digest:
            raise IndexCorruptError(
                f"index file {path} is missing or damaged (checksum mismatch); "
                "run `rag index --force` to rebuild"
            )


def _read_files(folder: Path, manifest: Manifest) -> tuple[list[Chunk], object, object | None]:
    import faiss

    from rag import faiss_index

    chunks = [
        Chunk.model_validate_json(line)
        for line in (folder / CHUNKS).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    index = faiss.read_index(str(folder / VECTORS))
    faiss_index.prepare(index, faiss_index.IndexSpec(kind=manifest.index_kind, parameters=manifest.index_parameters))
    bm25 = None
    if chunks:
        from rag.lexical import load_bm25s

        bm25 = load_bm25s().BM25.load(str(folder / BM25_DIR))
    return chunks, index, bm25


# -- writing -------------------------------------------------------------------------------------
def write_build(index_dir: Path, *, manifest_fields: dict, chunks: list[Chunk], index: object) -> LoadedIndex:
    """Write a complete build aside, then swap CURRENT to it. Returns the build, as loaded.

    `index` is the FAISS index of the chunks' vectors, rows in chunk order; `manifest_fields` are
    the Manifest's fields other than those the write itself decides (schema version, chunk count,
    build time, checksums); an optional "seconds" is time spent before, added to the build time.
    """
    import faiss

    started = time.perf_counter()
    fields = dict(manifest_fields)
    seconds = fields.pop("seconds", 0.0)
    name = new_build_name()
    tmp = build_folder(index_dir, TMP_PREFIX + name)
    tmp.mkdir(parents=True)
    faiss.write_index(index, str(tmp / VECTORS))
    with (tmp / CHUNKS).open("w", encoding="utf-8") as fh:
        for chunk in chunks:
            fh.write(chunk.model_dump_json() + "\n")
    bm25 = None
    if chunks:  # BM25 reads each chunk under its header, as the embedding model does
        from rag.lexical import build_bm25

        bm25 = build_bm25([embedding_text(c) for c in chunks])
        bm25.save(str(tmp / BM25_DIR))
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        chunk_count=len(chunks),
        built_at=datetime.now(timezone.utc),
        build_seconds=round(time.perf_counter() - started + seconds, 3),
        files=_checksums(tmp),
        **fields,
    )
    _write_synced(tmp / MANIFEST, manifest.model_dump_json(indent=1))
    _fsync_dir(tmp)
    os.replace(tmp, build_folder(index_dir, name))
    _fsync_dir(index_dir / BUILDS)
    _point_current(index_dir, name)
    collect_garbage(index_dir, keep=name)
    return LoadedIndex(name=name, manifest=manifest, chunks=list(chunks), faiss_index=index, bm25=bm25)


def _checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder, each fsynced first."""
    files: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        files[path.relative_to(folder).as_posix()] = _sha256(path)
    return files


def _point_current(index_dir: Path, name: str) -> None:
    pointer_tmp = index_dir / f".{CURRENT}.{uuid.uuid4().hex[:8]}"
    _write_synced(pointer_tmp, name + "\n")
    os.replace(pointer_tmp, index_dir / CURRENT)
    _fsync_dir(index_dir)


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def collect_garbage(index_dir: Path, keep: str | None = None) -> None:
    """Remove unfinished builds and all but the newest KEEP_BUILDS finished ones.

    `keep` (the build in use unless given) is never removed. Only whoever holds the build lock
    may call this: an unfinished build may be another builder's work in progress.
    """
    builds = index_dir / BUILDS
    if not builds.is_dir():
        return
    keep = keep or current_build_name(index_dir)
    finished = sorted(
        (p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    stale = [p for p in finished if p.name != keep][: max(0, len(finished) - KEEP_BUILDS)]
    stale += [p for p in builds.iterdir() if p.name.startswith(TMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    for leftover in index_dir.glob(f".{CURRENT}.*"):
        leftover.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rag", "faiss-cpu", "sentence-transformers", "torch", "tiktoken", "bm25s"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


@contextlib.contextmanager
def build_lock(index_dir: Path, timeout: float, warn: Callable[[str], None]) -> Iterator[None]:
    """The index folder's build lock: one build at a time, whichever engine builds."""
    lock = FileLock(str(index_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        warn("another build is running on this index; waiting for it to finish")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise IndexLockedError(
                f"another `rag index` has held {index_dir / '.lock'} for {timeout:.0f}s; "
                "wait for it or stop it"
            ) from None
    try:
        yield
    finally:
        lock.release()
