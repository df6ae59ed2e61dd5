"""Build the index from the seeds folder, incrementally by content hash."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from rag import loaders, store
from rag.chunking import TOKENIZER_NAME, Chunker
from rag.config import Settings
from rag.embedding import Embedder, canonical_model_id, get_embedder
from rag.errors import IndexLockedError, IndexStoreError, LoaderError, RagError
from rag.types import Chunk, DocumentEntry, IndexReport

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 600.0
Warn = Callable[[str], None]


def build_index(
    settings: Settings,
    *,
    force: bool = False,
    embedder: Embedder | None = None,
    progress: bool = False,
    warn: Warn | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> IndexReport:
    """Bring the index in line with the seeds folder, re-embedding only what changed."""
    seeds_dir = settings.require_seeds_dir()
    index_dir = settings.index_dir
    index_dir.mkdir(parents=True, exist_ok=True)
    warn = warn or log.warning
    lock = FileLock(str(index_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        warn("another build is running on this index; waiting for it to finish")
        try:
            lock.acquire(timeout=lock_timeout)
        except Timeout:
            raise IndexLockedError(
                f"another `rag index` has held {index_dir / '.lock'} for {lock_timeout:.0f}s; "
                "wait for it or stop it"
            ) from None
    try:
        return _build(settings, seeds_dir, index_dir, force, embedder, progress, warn)
    finally:
        lock.release()


def _build(
    settings: Settings,
    seeds_dir: Path,
    index_dir: Path,
    force: bool,
    embedder: Embedder | None,
    progress: bool,
    warn: Warn,
) -> IndexReport:
    started = time.perf_counter()
    model_id = embedder.model_id if embedder is not None else canonical_model_id(settings.embedding_model)

    # 1. What is there now, by content hash (cheap: no model, no parsing).
    files, skips = loaders.scan(seeds_dir)
    skipped = [f"{s.rel}: {s.reason}" for s in skips]
    for line in skipped:
        warn(f"skipped {line}")
    current: dict[str, tuple[loaders.SourceFile, bytes | None, str | None]] = {}
    for source in files:
        try:
            data = loaders.read_bytes(source)
        except LoaderError as exc:
            current[source.rel] = (source, None, str(exc))
            continue
        current[source.rel] = (source, data, loaders.content_hash(data))

    # 2. What the previous build holds, and whether it can be reused.
    previous = None
    reason = None
    try:
        old_manifest = store.read_manifest(index_dir)
    except IndexStoreError as exc:
        old_manifest, reason = None, f"the previous index is unreadable ({exc})"
    if old_manifest is not None:
        if force:
            reason = "--force was given"
        elif old_manifest.schema_version != store.SCHEMA_VERSION:
            reason = f"the index format changed ({old_manifest.schema_version} -> {store.SCHEMA_VERSION})"
        elif old_manifest.embedding_model != model_id:
            reason = f"the embedding model changed ({old_manifest.embedding_model} -> {model_id})"
        elif (old_manifest.chunk_tokens, old_manifest.chunk_overlap) != (
            settings.chunk_tokens,
            settings.chunk_overlap,
        ):
            reason = (
                f"the chunking changed ({old_manifest.chunk_tokens}/{old_manifest.chunk_overlap} -> "
                f"{settings.chunk_tokens}/{settings.chunk_overlap} tokens)"
            )
    reusable = old_manifest is not None and reason is None
    old_docs = old_manifest.documents if (reusable and old_manifest) else {}

    added, changed, unchanged, failed = [], [], [], []
    for rel, (_, data, digest) in sorted(current.items()):
        if data is None:
            failed.append(rel)
        elif rel not in old_docs:
            added.append(rel)
        elif old_docs[rel].content_hash != digest:
            changed.append(rel)
        else:
            unchanged.append(rel)
    # A file that exists but cannot be read keeps its previous version rather than vanishing.
    kept_unreadable = [rel for rel in failed if rel in old_docs]
    for rel in failed:
        message = current[rel][2]
        suffix = "; keeping its previous version" if rel in old_docs else ""
        warn(f"skipped {message}{suffix}")
        skipped.append(f"{message}")
    removed = sorted(set(old_docs) - set(current))

    if reusable and not (added or changed or removed):
        # Nothing to write, but a build killed earlier may have left its half-written folder;
        # write_build sweeps those only when it runs, so sweep here too (we hold the lock).
        current_name = store.current_build_name(index_dir)
        if current_name:
            store._collect_garbage(index_dir, keep=current_name)  # noqa: SLF001
        return IndexReport(
            unchanged=unchanged + kept_unreadable,
            skipped=skipped,
            chunks=old_manifest.chunk_count if old_manifest else 0,
            seconds=round(time.perf_counter() - started, 3),
        )
    if reason:
        warn(f"full rebuild: {reason}")

    # 3. Parse and chunk what is new; reuse chunks and vectors of what is not.
    embedder = embedder or get_embedder(settings.embedding_model)
    chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap, fits=embedder.fits)
    old = None
    if reusable and (unchanged or kept_unreadable):
        try:
            old = store.load(index_dir)
        except IndexStoreError as exc:
            warn(f"full rebuild: the previous index is unreadable ({exc})")
            reason = "the previous index is unreadable"
            changed, added, unchanged = [], sorted(added + changed + unchanged), []
            kept_unreadable = []
            old_docs = {}

    entries: dict[str, DocumentEntry] = {}
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    if old is not None:
        old_vectors = old.vectors()
        for rel in sorted(unchanged + kept_unreadable):
            entry = old_docs[rel]
            rows = [old.by_id[cid] for cid in entry.chunk_ids]
            chunks.extend(old.chunks[r] for r in rows)
            if rows:
                vectors.append(old_vectors[rows])
            entries[rel] = entry

    new_chunks: list[Chunk] = []
    for rel in sorted(added + changed):
        source, data, digest = current[rel]
        assert data is not None and digest is not None
        try:
            document = loaders.parse(source, data)
        except LoaderError as exc:
            warn(f"skipped {exc}")
            skipped.append(str(exc))
            (added if rel in added else changed).remove(rel)
            if rel in old_docs:
                removed.append(rel)
            continue
        doc_chunks = chunker.split(document)
        if not doc_chunks:
            warn(f"{rel}: no text to index")
        entries[rel] = DocumentEntry(
            path=rel, content_hash=digest, chunk_ids=[c.id for c in doc_chunks], kind=document.kind
        )
        new_chunks.extend(doc_chunks)

    if new_chunks:
        vectors.append(
            embedder.embed(
                [c.text for c in new_chunks],
                batch_size=settings.embedding_batch_size,
                progress=progress and len(new_chunks) >= 64,
            )
        )
    chunks.extend(new_chunks)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dimension), np.float32)
    if len(matrix) != len(chunks):
        raise RagError(f"internal error: {len(matrix)} vectors for {len(chunks)} chunks")

    store.write_build(
        index_dir,
        manifest_fields={
            "embedding_model": embedder.model_id,
            "dimension": embedder.dimension,
            "max_model_tokens": embedder.max_tokens,
            "chunk_tokens": settings.chunk_tokens,
            "chunk_overlap": settings.chunk_overlap,
            "tokenizer": TOKENIZER_NAME,
            "documents": dict(sorted(entries.items())),
            "library_versions": store.library_versions(),
            "seconds": time.perf_counter() - started,
        },
        chunks=chunks,
        vectors=matrix,
    )
    return IndexReport(
        added=added,
        changed=changed,
        removed=sorted(set(removed)),
        unchanged=sorted(unchanged + kept_unreadable),
        skipped=skipped,
        chunks=len(chunks),
        embedded_chunks=len(new_chunks),
        seconds=round(time.perf_counter() - started, 3),
        full_rebuild_reason=reason,
        wrote=True,
    )


def watch(
    settings: Settings,
    on_report: Callable[[IndexReport], None],
    *,
    on_error: Callable[[RagError], None] | None = None,
    stop_event=None,
    embedder: Embedder | None = None,
) -> None:
    """Rebuild incrementally whenever files in the seeds folder change (debounced), until stopped.

    Survives the seeds folder being removed and recreated: it waits for it to come back.
    """
    from watchfiles import Change, watch as watch_files

    def rebuild() -> None:
        try:
            on_report(build_index(settings, embedder=embedder))
        except RagError as exc:
            (on_error or (lambda e: log.error("%s", e)))(exc)

    def identity() -> tuple[int, int] | None:
        try:
            st = seeds.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    seeds = settings.seeds_dir
    while stop_event is None or not stop_event.is_set():
        if not seeds.is_dir():
            time.sleep(0.5)
            continue
        watched = identity()
        rebuild()
        try:
            for _changes in watch_files(
                seeds,
                debounce=settings.watch_debounce_ms,
                stop_event=stop_event,
                raise_interrupt=False,
                rust_timeout=1000,
                yield_on_timeout=True,
            ):
                # A folder removed and recreated between two checks is another folder: the OS
                # watch stays on the old one and would never report a change again. Its inode
                # number may be reused at once, so the folder's own deletion event counts too.
                if identity() != watched or any(
                    change == Change.deleted and _same_path(path, seeds) for change, path in _changes
                ):
                    break
                if _changes:
                    rebuild()
        except FileNotFoundError:
            pass
        # The folder vanished (or the watcher ended): loop to wait for it and rebuild.
        if stop_event is not None and stop_event.is_set():
            break
        time.sleep(0.2)


def _same_path(reported: str, folder: Path) -> bool:
    return os.path.abspath(reported) in (os.path.abspath(folder), os.path.realpath(folder))
