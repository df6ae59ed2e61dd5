"""Build the index from the seeds folder, incrementally by content hash, through the vector store.

A build is five steps, each a function of the one before: scan the folder (content hashes), plan
against the store's manifest (a frozen Plan: added, changed, removed, unchanged), collect the
chunks of what is new, embed them, and write (delete, add, commit) through the WritableStore
protocol, so any store (FAISS files, PostgreSQL) gets the same incremental builds.
"""

from __future__ import annotations


import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ConfigDict

from rag import faiss_folder, loaders
from rag.chunking import CHUNKING_VERSION, TOKENIZER_NAME, Chunker, embedding_text
from rag.config import Settings
from rag.embedding import Embedder, canonical_model_id, get_embedder
from rag.errors import IndexNotFoundError, IndexStoreError, LoaderError, RagError
from rag.types import Chunk, DocumentEntry, Frozen, IndexReport, Manifest
from rag.vectorstore import WritableStore, open_store

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 600.0
# The manifest records the chunking version among the versions of what made the build; a build
# from before it was recorded is version 1.
CHUNKING_KEY = "rag-chunking"
Warn = Callable[[str], None]


class ScannedFile(Frozen):
    """A readable file of the seeds folder: its bytes (parsed later exactly as hashed) and hash."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    source: loaders.SourceFile
    data: bytes
    digest: str


class Scan(Frozen):
    """What the seeds folder holds now, by content hash (cheap: no model, no parsing)."""

    files: dict[str, ScannedFile]  # readable files by relative path
    unreadable: dict[str, str]  # relative path -> why it could not be read
    skipped: tuple[str, ...] = ()  # "path: reason" of files that are not documents


class Plan(Frozen):
    """What a build does, decided once from the scan and the store's manifest."""

    added: tuple[str, ...] = ()  # not in the store: parse, chunk, embed
    changed: tuple[str, ...] = ()  # in the store with other content: delete, then as added
    removed: tuple[str, ...] = ()  # in the store, gone from the folder: delete
    unchanged: tuple[str, ...] = ()  # in the store with this content: kept as they are
    kept_unreadable: tuple[str, ...] = ()  # unreadable now: the store's version stays
    discarded: tuple[str, ...] = ()  # the store's documents a full rebuild drops
    reuse: bool = False  # whether the store's build is kept and changed, or rebuilt from nothing
    full_rebuild_reason: str | None = None

    @property
    def to_delete(self) -> list[str]:
        return sorted({*self.changed, *self.removed, *self.discarded})

    @property
    def to_embed(self) -> list[str]:
        return sorted(self.added + self.changed)

    @property
    def kept(self) -> list[str]:
        return sorted(self.unchanged + self.kept_unreadable)

    @property
    def has_work(self) -> bool:
        return not self.reuse or bool(self.added or self.changed or self.removed)


class Collected(Frozen):
    """The chunks of the documents a build embeds, and the documents that failed to parse."""

    chunks: tuple[Chunk, ...] = ()
    entries: dict[str, DocumentEntry] = {}
    failed: dict[str, str] = {}  # relative path -> why


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
    settings.require_seeds_dir()
    index_dir = settings.index_dir
    index_dir.mkdir(parents=True, exist_ok=True)
    warn = warn or log.warning
    with faiss_folder.build_lock(index_dir, lock_timeout, warn):
        return _build(settings, force, embedder, progress, warn)


def prepare(writer: WritableStore, settings: Settings, scan, model_id: str, force: bool, warn: Warn,
            started: float) -> tuple["Plan", list[str], Manifest | None] | IndexReport:
    """Plan against what the store holds and delete what goes: (plan, skipped, previous build's
    manifest), or the finished report when there is nothing to do. Shared by every engine."""
    previous, unreadable = _previous_manifest(writer)
    version = writer.schema_version
    reason = unreadable or rebuild_reason(previous, settings, model_id, force, schema_version=version)
    plan = plan_build(scan, previous, reason)
    skipped = [*scan.skipped, *_note_unreadable(scan, plan, warn)]
    if not plan.has_work:
        # Nothing to write, but a build killed earlier may have left its half-written work,
        # which only a write sweeps; sweep here too (the lock is held).
        writer.sweep()
        return IndexReport(
            unchanged=plan.kept,
            skipped=skipped,
            chunks=previous.chunk_count if previous else 0,
            seconds=round(time.perf_counter() - started, 3),
        )
    if plan.full_rebuild_reason:
        warn(f"full rebuild: {plan.full_rebuild_reason}")
    return _delete(writer, plan, scan, previous, warn), skipped, previous


def _build(settings: Settings, force: bool, embedder: Embedder | None, progress: bool, warn: Warn) -> IndexReport:
    started = time.perf_counter()
    model_id = embedder.model_id if embedder is not None else canonical_model_id(settings.embedding_model)
    scan = scan_seeds(settings.seeds_dir)
    for line in scan.skipped:
        warn(f"skipped {line}")
    writer = open_store(settings, writable=True)
    try:
        prepared = prepare(writer, settings, scan, model_id, force, warn, started)
        if isinstance(prepared, IndexReport):
            return prepared
        plan, skipped, previous = prepared
        embedder = embedder or get_embedder(settings.embedding_model)
        collected = collect_chunks(scan, plan, settings, embedder, warn)
        writer.add(collected.chunks, embed_chunks(collected.chunks, embedder, settings, progress))
        kept = {rel: previous.documents[rel] for rel in plan.kept} if previous and plan.reuse else {}
        documents = kept | collected.entries
        manifest = writer.commit(manifest_fields(settings, embedder, documents, seconds=time.perf_counter() - started))
        return _report(plan, collected, skipped, manifest, started)
    finally:
        # A store holding connections (PostgreSQL: the build's transaction and its lock) lets
        # them go now, not when the garbage collector gets to it.
        writer.close()


# -- the steps -----------------------------------------------------------------------------------
def scan_seeds(seeds_dir) -> Scan:
    """Read and hash every document file of the folder."""
    sources, skips = loaders.scan(seeds_dir)
    files: dict[str, ScannedFile] = {}
    unreadable: dict[str, str] = {}
    for source in sources:
        try:
            data = loaders.read_bytes(source)
        except LoaderError as exc:
            unreadable[source.rel] = str(exc)
            continue
        files[source.rel] = ScannedFile(source=source, data=data, digest=loaders.content_hash(data))
    return Scan(files=files, unreadable=unreadable, skipped=tuple(f"{s.rel}: {s.reason}" for s in skips))


def rebuild_reason(previous: Manifest | None, settings: Settings, model_id: str, force: bool, *,
                   schema_version: int) -> str | None:
    """Why the store's build cannot be reused, or None when it can (or there is none);
    `schema_version` is the format the store writes (its `schema_version`)."""
    if previous is None:
        return None
    if force:
        return "--force was given"
    if previous.schema_version != schema_version:
        return f"the index format changed ({previous.schema_version} -> {schema_version})"
    if previous.embedding_model != model_id:
        return f"the embedding model changed ({previous.embedding_model} -> {model_id})"
    if (previous.chunk_tokens, previous.chunk_overlap) != (settings.chunk_tokens, settings.chunk_overlap):
        return (
            f"the chunking changed ({previous.chunk_tokens}/{previous.chunk_overlap} -> "
            f"{settings.chunk_tokens}/{settings.chunk_overlap} tokens)"
        )
    built = previous.library_versions.get(CHUNKING_KEY, "1")
    if built != str(CHUNKING_VERSION):
        return f"the chunking changed (version {built} -> {CHUNKING_VERSION})"
    return None


def plan_build(scan: Scan, previous: Manifest | None, reason: str | None) -> Plan:
    """Compare the folder with the store's build: what to add, change, remove and keep."""
    reuse = previous is not None and reason is None
    old = previous.documents if (previous is not None and reuse) else {}
    added, changed, unchanged = [], [], []
    for rel, scanned in sorted(scan.files.items()):
        if rel not in old:
            added.append(rel)
        elif old[rel].content_hash != scanned.digest:
            changed.append(rel)
        else:
            unchanged.append(rel)
    return Plan(
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(sorted(set(old) - set(scan.files) - set(scan.unreadable))),
        unchanged=tuple(unchanged),
        # A file that exists but cannot be read keeps its previous version rather than vanishing.
        kept_unreadable=tuple(sorted(rel for rel in scan.unreadable if rel in old)),
        discarded=tuple(sorted(previous.documents)) if (previous is not None and not reuse) else (),
        reuse=reuse,
        full_rebuild_reason=reason,
    )


def collect_chunks(scan: Scan, plan: Plan, settings: Settings, embedder: Embedder, warn: Warn) -> Collected:
    """Parse and chunk the documents the plan embeds; a file that fails to parse is skipped."""
    chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap, fits=embedder.fits)
    chunks: list[Chunk] = []
    entries: dict[str, DocumentEntry] = {}
    failed: dict[str, str] = {}
    for rel in plan.to_embed:
        scanned = scan.files[rel]
        try:
            document = loaders.parse(scanned.source, scanned.data, ocr=settings.ocr)
        except LoaderError as exc:
            warn(f"skipped {exc}")
            failed[rel] = str(exc)
            continue
        doc_chunks = chunker.split(document)
        if not doc_chunks:
            warn(f"{rel}: no text to index")
        entries[rel] = DocumentEntry(
            path=rel, content_hash=scanned.digest, chunk_ids=[c.id for c in doc_chunks], kind=document.kind
        )
        chunks.extend(doc_chunks)
    return Collected(chunks=tuple(chunks), entries=entries, failed=failed)


def embed_chunks(chunks: tuple[Chunk, ...] | list[Chunk], embedder: Embedder, settings: Settings,
                 progress: bool = False) -> np.ndarray:
    """The vectors of the chunks (each text under its header), one row each, in order."""
    if not chunks:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return embedder.embed(
        [embedding_text(c) for c in chunks],
        batch_size=settings.embedding_batch_size,
        progress=progress and len(chunks) >= 64,
    )


def manifest_fields(settings: Settings, embedder: Embedder, documents: dict[str, DocumentEntry], *,
                    seconds: float = 0.0) -> dict:
    """What a build's manifest records that the store cannot know (see WritableStore.commit)."""
    return {
        "embedding_model": embedder.model_id,
        "dimension": embedder.dimension,
        "max_model_tokens": embedder.max_tokens,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "tokenizer": TOKENIZER_NAME,
        "documents": dict(sorted(documents.items())),
        "library_versions": {**faiss_folder.library_versions(), CHUNKING_KEY: str(CHUNKING_VERSION)},
        "seconds": seconds,
    }


# -- helpers of the steps ------------------------------------------------------------------------
def _previous_manifest(writer: WritableStore) -> tuple[Manifest | None, str | None]:
    """The store's manifest, and why it cannot be used when it cannot be read."""
    try:
        return writer.manifest(), None
    except IndexNotFoundError:
        return None, None
    except IndexStoreError as exc:
        return None, f"the previous index is unreadable ({exc})"


def _note_unreadable(scan: Scan, plan: Plan, warn: Warn) -> list[str]:
    for rel, message in sorted(scan.unreadable.items()):
        warn(f"skipped {message}" + ("; keeping its previous version" if rel in plan.kept_unreadable else ""))
    return [message for _, message in sorted(scan.unreadable.items())]


def _delete(writer: WritableStore, plan: Plan, scan: Scan, previous: Manifest | None, warn: Warn) -> Plan:
    """Delete what the plan drops; a build that cannot be read turns the plan into a full rebuild."""
    try:
        writer.delete_documents(plan.to_delete)
        return plan
    except IndexStoreError as exc:
        if not plan.reuse:
            raise
        warn(f"full rebuild: the previous index is unreadable ({exc})")
    plan = plan_build(scan, previous, "the previous index is unreadable")
    writer.delete_documents(plan.to_delete)  # every document: nothing of the old build is read
    return plan


def _report(plan: Plan, collected: Collected, skipped: list[str], manifest: Manifest, started: float) -> IndexReport:
    return IndexReport(
        added=[rel for rel in plan.added if rel in collected.entries],
        changed=[rel for rel in plan.changed if rel in collected.entries],
        # A changed file that no longer parses has lost its old version too.
        removed=sorted({*plan.removed, *(rel for rel in plan.changed if rel in collected.failed)}),
        unchanged=plan.kept,
        skipped=[*skipped, *collected.failed.values()],
        chunks=manifest.chunk_count,
        embedded_chunks=len(collected.chunks),
        seconds=round(time.perf_counter() - started, 3),
        full_rebuild_reason=plan.full_rebuild_reason,
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
