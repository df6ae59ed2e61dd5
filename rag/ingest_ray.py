"""Indexing on a Ray cluster: files read and chunked, then embedded, by pools of Ray actors.

`rag index --engine ray [--address ADDR]`. The plan (what changed since the last build) is the
plain indexer's; Ray Data reads, parses and chunks the files to (re)embed, an actor pool of
embedders (`map_batches` with a class, one GPU each when the cluster has GPUs) turns the chunks
into vectors, and the driver writes them to the configured store in batches through the
WritableStore protocol (delete the changed documents, add, commit once).

On one machine this is no faster than the plain path (the model is the bottleneck either way);
it pays with several machines or GPUs. Every node must see the documents folder at the same
path (a shared or copied file system): workers read the files themselves, so the driver never
holds the corpus. Optional: `pip install -e ".[scale]"`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.chunking import embedding_text
from rag.errors import ConfigError, RagError
from rag.types import Chunk

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[scale]"'
FILES_PER_BLOCK = 16  # files per Ray Data block: small enough to spread, big enough to batch
EMBED_BATCH = 64  # chunks handed to an embedding actor at a time
WRITE_BATCH = 1024  # chunks per store.add() call


def import_ray():
    """The `ray` module with Ray Data, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"the ray engine needs Ray Data, which is not installed: {INSTALL_HINT}") from None
    return ray


def ray_temp_dir() -> Path:
    """Ray's session files (sockets, logs, spilled objects) under the cache folder, not /tmp."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag" / "ray"


@contextlib.contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[object]:
    """Connect to the cluster at `address`, or start a local one; always shut down afterwards."""
    ray = import_ray()
    # Ray's usage reporter would try to reach the internet; its dashboard probes cloud metadata
    # addresses even with reporting off. Neither is wanted on an offline machine.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if ray.is_initialized():
        raise RagError("Ray is already running in this process; shut it down before indexing with it")
    # Ray's progress lines go to its log files, not the user's terminal.
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            temp = ray_temp_dir()
            temp.mkdir(parents=True, exist_ok=True)
            ray.init(num_cpus=num_cpus, _temp_dir=str(temp), **options)
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise RagError(f"cannot start {where} ({type(exc).__name__}: {exc})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class FileTask:
    """One file to read, chunk and embed: its name in the index, where it is, its planned hash."""

    rel: str
    path: str
    content_hash: str


@dataclass(frozen=True)
class ChunkedFile:
    """What came back for one file: its chunks with their vectors, or why it was skipped."""

    rel: str
    content_hash: str
    kind: str
    chunks: list[Chunk]
    vectors: np.ndarray
    error: str | None = None


class _ChunkFiles:
    """Ray Data stage: read and chunk a batch of files with the plain indexer's own chunk step
    (one row a chunk, one row for a file without chunks, one error row for a file that failed)."""

    def __init__(self, fields: dict) -> None:
        from rag.config import Settings
        from rag.embedding import get_embedder

        # Values of the driver's validated settings; the rest keep their defaults (unused here).
        settings = Settings.model_construct(**fields)
        self.settings = settings
        # The model's tokenizer check: chunks are cut exactly as the plain path cuts them.
        self.embedder = get_embedder(settings.embedding_model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from rag import indexer, loaders
        from rag.errors import LoaderError

        out: dict[str, list] = {"rel": [], "hash": [], "kind": [], "chunk": [], "text": [], "error": []}

        def emit(rel: str, digest: str, kind: str = "", chunk: str = "", text: str = "", error: str = "") -> None:
            for key, value in zip(out, (rel, digest, kind, chunk, text, error)):
                out[key].append(value)

        for rel, path, digest in zip(batch["rel"], batch["path"], batch["hash"]):
            rel, digest = str(rel), str(digest)
            source = loaders.SourceFile(rel, Path(str(path)))
            try:
                data = loaders.read_bytes(source)
                if loaders.content_hash(data) != digest:
                    raise LoaderError(f"{rel}: changed while indexing; run `rag index` again")
            except LoaderError as exc:
                emit(rel, digest, error=str(exc))
                continue
            scan = indexer.Scan(files={rel: indexer.ScannedFile(source=source, data=data, digest=digest)},
                                unreadable={})
            collected = indexer.collect_chunks(scan, indexer.Plan(added=(rel,), reuse=True), self.settings,
                                               self.embedder, warn=lambda _message: None)
            if rel in collected.failed:
                emit(rel, digest, error=collected.failed[rel])
                continue
            kind = collected.entries[rel].kind
            if not collected.chunks:  # still recorded, with no chunks
                emit(rel, digest, kind)
            for chunk in collected.chunks:
                emit(rel, digest, kind, chunk.model_dump_json(), embedding_text(chunk))  # what is embedded: text under its header
        return out


class _EmbedChunks:
    """Ray Data actor: the embedding model loaded once, vectors for a batch of chunk rows."""

    def __init__(self, model: str, batch_size: int, threads: int, device: str) -> None:
        from rag.embedding import get_embedder, resolve_model_path

        if device == "cpu":
            self.embedder = get_embedder(model)
            # One actor per `threads` CPUs: keep torch to its share instead of every core.
            self.embedder._threads = max(1, threads)  # noqa: SLF001
            self.encode = lambda texts: self.embedder.embed(texts, batch_size=batch_size)
            self.dimension = self.embedder.dimension
        else:
            from sentence_transformers import SentenceTransformer

            model_ = SentenceTransformer(resolve_model_path(model), device=device)
            self.encode = lambda texts: np.asarray(
                model_.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True),
                dtype=np.float32,
            )
            self.dimension = int(model_.get_sentence_embedding_dimension())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        real = [i for i, c in enumerate(batch["chunk"]) if str(c)]
        # Error and empty-file rows get a zero vector: every block keeps one tensor shape.
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if real:
            vectors[real] = self.encode([texts[i] for i in real])
        return {**{k: batch[k] for k in ("rel", "hash", "kind", "chunk", "error")}, "vector": vectors}


def embed_files(ray, tasks: Sequence[FileTask], settings, *, actors: int | None = None) -> Iterator[ChunkedFile]:
    """Chunk and embed the files on the cluster; one ChunkedFile per task, in the tasks' order."""
    if not tasks:
        return

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # chunks come back in file and ordinal order
    context.enable_progress_bars = False
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        pool, per_actor, threads, device = actors or gpus, {"num_gpus": 1, "num_cpus": 1}, 1, "cuda"
    else:
        # Two threads an actor: matrix products on two cores are near twice as fast as on one,
        # and more actors than that only add model copies.
        threads = 2 if cpus >= 2 else 1
        pool, per_actor, device = actors or max(1, cpus // threads), {"num_cpus": threads}, "cpu"
    # Workers get only what chunking needs, never a secret (API key, login, database URL).
    fields = {name: getattr(settings, name) for name in ("embedding_model", "chunk_tokens", "chunk_overlap")}
    items = [{"rel": t.rel, "path": t.path, "hash": t.content_hash} for t in tasks]
    blocks = max(1, -(-len(items) // FILES_PER_BLOCK))
    dataset = (
        ray.data.from_items(items, override_num_blocks=blocks)
        .map_batches(
            _ChunkFiles,
            fn_constructor_kwargs={"fields": fields},
            batch_size=FILES_PER_BLOCK,
            batch_format="numpy",
            # Chunking is quick next to embedding: one chunker feeds about four embedders.
            compute=ray.data.ActorPoolStrategy(size=max(1, pool // 4)),
            num_cpus=1,
        )
        .map_batches(
            _EmbedChunks,
            fn_constructor_kwargs={"model": settings.embedding_model, "batch_size": settings.embedding_batch_size,
                                   "threads": threads, "device": device},
            batch_size=EMBED_BATCH,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool),
            **per_actor,
        )
    )
    yield from _group_by_file(dataset.iter_batches(batch_size=WRITE_BATCH, batch_format="numpy"))


def _group_by_file(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[ChunkedFile]:
    """Rows (one a chunk) back into files: rows of one file are contiguous when order is kept."""
    current: dict | None = None

    def finish(entry: dict) -> ChunkedFile:
        vectors = np.stack(entry["vectors"]) if entry["vectors"] else np.zeros((0, 0), np.float32)
        return ChunkedFile(entry["rel"], entry["hash"], entry["kind"], entry["chunks"], vectors, entry["error"])

    for batch in batches:
        for rel, digest, kind, chunk, error, vector in zip(
            batch["rel"], batch["hash"], batch["kind"], batch["chunk"], batch["error"], batch["vector"]
        ):
            rel = str(rel)
            if current is None or current["rel"] != rel:
                if current is not None:
                    yield finish(current)
                current = {"rel": rel, "hash": str(digest), "kind": str(kind), "chunks": [], "vectors": [],
                           "error": str(error) or None}
            if str(chunk):
                current["chunks"].append(Chunk.model_validate_json(str(chunk)))
                current["vectors"].append(np.asarray(vector, dtype=np.float32))
    if current is not None:
        yield finish(current)


def build_index_ray(
    settings,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
    force: bool = False,
    warn: Callable[[str], None] | None = None,
    lock_timeout: float | None = None,
):
    """`build_index` with Ray: same plan, same store writes, chunking and embedding on the cluster.

    Connects to `address` (`ray://...` or `host:port`) when given, else starts a local cluster
    (`num_cpus` of this machine); shuts Ray down at the end either way.
    """
    from rag import faiss_folder, indexer

    import_ray()  # say what to install before any work is done
    warn = warn or log.warning
    settings.require_seeds_dir()
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    timeout = indexer.LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    with faiss_folder.build_lock(settings.index_dir, timeout, warn):
        cluster = {"address": address, "num_cpus": num_cpus, "actors": actors}
        return _build(settings, cluster, force, warn)


def _build(settings, cluster: dict, force: bool, warn: Callable[[str], None]):
    """The plain indexer's scan, plan and store writes, with the files to embed sent to Ray."""
    import time

    from rag import indexer
    from rag.embedding import canonical_model_id, get_embedder
    from rag.types import IndexReport
    from rag.vectorstore import open_store

    started = time.perf_counter()
    scan = indexer.scan_seeds(settings.seeds_dir)
    for line in scan.skipped:
        warn(f"skipped {line}")
    writer = open_store(settings, writable=True)
    try:
        prepared = indexer.prepare(writer, settings, scan, canonical_model_id(settings.embedding_model),
                                   force, warn, started)
        if isinstance(prepared, IndexReport):
            return prepared
        plan, skipped, previous = prepared
        tasks = [FileTask(rel, str(scan.files[rel].source.path), scan.files[rel].digest) for rel in plan.to_embed]
        written = _embed_and_add(writer, tasks, settings, cluster, warn)
        kept = {rel: previous.documents[rel] for rel in plan.kept} if previous and plan.reuse else {}
        embedder = get_embedder(settings.embedding_model)  # model id, dimension, limit for the manifest
        manifest = writer.commit(indexer.manifest_fields(settings, embedder, kept | written.entries,
                                                         seconds=time.perf_counter() - started))
        collected = indexer.Collected(entries=written.entries, failed=written.failed)
        report = indexer._report(plan, collected, skipped, manifest, started)  # noqa: SLF001
        return report.model_copy(update={"embedded_chunks": written.embedded})
    finally:
        writer.close()  # a database store's transaction and lock go now


@dataclass
class _Written:
    """What the cluster sent back and the driver added to the store."""

    entries: dict  # relative path -> DocumentEntry of the files chunked and embedded
    failed: dict[str, str]  # relative path -> why it was skipped
    embedded: int  # chunks embedded


def _embed_and_add(writer, tasks: list[FileTask], settings, cluster: dict, warn: Callable[[str], None]) -> _Written:
    """Chunk and embed the files on the cluster, adding what comes back to the store in batches."""
    from rag.types import DocumentEntry

    written = _Written(entries={}, failed={}, embedded=0)
    pending: list[ChunkedFile] = []

    def flush() -> None:
        chunks = [c for f in pending for c in f.chunks]
        if chunks:
            writer.add(chunks, np.concatenate([f.vectors for f in pending if f.chunks]))
        pending.clear()

    with ray_cluster(cluster["address"], num_cpus=cluster["num_cpus"]) as ray:
        for done in embed_files(ray, tasks, settings, actors=cluster["actors"]):
            if done.error:
                warn(f"skipped {done.error}")
                written.failed[done.rel] = done.error
                continue
            if not done.chunks:
                warn(f"{done.rel}: no text to index")
            written.entries[done.rel] = DocumentEntry(path=done.rel, content_hash=done.content_hash,
                                                      chunk_ids=[c.id for c in done.chunks], kind=done.kind)
            written.embedded += len(done.chunks)
            pending.append(done)
            if sum(len(f.chunks) for f in pending) >= WRITE_BATCH:
                flush()
        flush()
    missing = [t.rel for t in tasks if t.rel not in written.entries and t.rel not in written.failed]
    if missing:
        raise RagError(f"the Ray cluster returned nothing for {len(missing)} files (first: {missing[0]}); "
                       "nothing was committed, run `rag index --engine ray` again")
    return written

