"""The index build in use by one process: loaded once, reloaded when a new build is reported.

Answers always come from one complete build. The handle builds an index only when asked
(`index`, `ensure`, `watch`, through rag.indexer); reading a missing one is an IndexNotFoundError
saying how to build it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import IndexNotFoundError, LoaderError, RagError
from rag.retrieval import Retriever
from rag.types import Chunk, IndexReport, IndexStatus
from rag.vectorstore import open_store, store_class

# Another process (`rag index` in a terminal) may swap in a build without telling this one: a
# store serving one build is asked at most this often whether it is stale. A watcher's report
# reloads at once.
POINTER_CHECK_SECONDS = 2.0
DOCUMENT_CACHE_SIZE = 32


class IndexHandle:
    """Owns the current build of one index folder and the documents it was made from."""

    def __init__(self, settings: Settings, embedder: Callable[[], Embedder]) -> None:
        self.settings = settings
        self._embedder = embedder
        self._lock = threading.RLock()
        self._retriever: Retriever | None = None
        self._checked_at = 0.0
        self._chunks: tuple[str, list[Chunk]] | None = None  # (build, its chunks)
        self._documents: OrderedDict[tuple[str, str, float], str | None] = OrderedDict()

    @property
    def loaded(self) -> bool:
        """Whether a build has been loaded (so there is an index to answer from)."""
        return self._retriever is not None

    def refresh(self) -> None:
        """Look for a newer build on the next read (a watcher or `index()` reported one)."""
        self._checked_at = 0.0

    def index(self, *, embedder: Embedder | None = None, force: bool = False, progress: bool = False,
              warn=None) -> IndexReport:
        """Incremental rebuild from the seeds folder (rag.indexer); answers switch to it at once."""
        from rag.indexer import build_index

        report = build_index(self.settings, force=force, embedder=embedder, progress=progress, warn=warn)
        self.refresh()
        return report

    def ensure(self, *, embedder: Embedder | None = None, warn=None) -> IndexReport | None:
        """Build the index when there is none yet; None when one exists."""
        try:
            index_status(self.settings)
            return None
        except IndexNotFoundError:
            return self.index(embedder=embedder, warn=warn)

    def watch(self, on_report, *, embedder: Embedder | None = None, on_error=None, stop_event=None) -> None:
        """Rebuild on every change in the seeds folder until `stop_event` is set; each new build
        is served at once (the previous one meanwhile)."""
        from rag.indexer import watch

        def reported(report: IndexReport) -> None:
            self.refresh()
            on_report(report)

        watch(self.settings, reported, on_error=on_error, stop_event=stop_event, embedder=embedder)

    def retriever(self) -> Retriever:
        """The retriever over the build in use; IndexNotFoundError when there is none."""
        with self._lock:
            now = time.monotonic()
            if self._retriever is not None and now - self._checked_at < POINTER_CHECK_SECONDS:
                return self._retriever
            self._checked_at = now
            # A store serving one build (FAISS files) goes stale when another is swapped in; a
            # shared one (a database) always answers from its newest committed build.
            if self._retriever is None or self._retriever.store.stale():
                self._retriever = self._open()
            return self._retriever

    def _open(self) -> Retriever:
        """The build in use, checked against the embedder that will search it."""
        store = open_store(self.settings, check=False)
        try:
            embedder = self._embedder()
            store.check_compatible(embedder.model_id, self.settings.chunk_tokens, self.settings.chunk_overlap)
        except BaseException:
            store.close()
            raise
        return Retriever(store, embedder)

    @property
    def build(self) -> str:
        """The name of the build in use."""
        return str(self.retriever().store.stats().build)

    @property
    def chunk_count(self) -> int:
        """How many chunks the build in use holds (from its statistics, no chunk read)."""
        return self.retriever().store.stats().chunks

    def chunks(self) -> list[Chunk]:
        """Every chunk of the build in use, in the manifest's order (read once per build)."""
        store = self.retriever().store
        build = str(store.stats().build)
        with self._lock:
            if self._chunks is not None and self._chunks[0] == build:
                return self._chunks[1]
        with store.snapshot() as pinned:  # the build's name and its chunks from one build
            build, chunks = str(pinned.stats().build), pinned.all_chunks()
        with self._lock:
            self._chunks = (build, chunks)
        return chunks

    def sources(self) -> list[str]:
        return sorted(self.retriever().manifest.documents)

    def read_document(self, source: str) -> str | None:
        """The text of an indexed document, or None if it is not in the index or unreadable.

        Only paths the index knows are opened: a path from a client never reaches the disk as is.
        The last few documents read are kept, keyed by build and modification time.
        """
        try:
            retriever = self.retriever()
        except RagError:
            return None
        if source not in retriever.manifest.documents:
            return None
        from rag.loaders import document_text, source_file

        root = self.settings.seeds_dir.resolve()
        try:  # the file itself, or the message holding an attachment ("mail.eml/report.pdf")
            key = (self.build, source, source_file(root, source).path.stat().st_mtime)
        except (OSError, LoaderError):
            return None
        with self._lock:
            if key in self._documents:
                self._documents.move_to_end(key)
                return self._documents[key]

        try:
            text: str | None = document_text(root, source)
        except LoaderError:
            text = None
        with self._lock:
            self._documents[key] = text
            while len(self._documents) > DOCUMENT_CACHE_SIZE:
                self._documents.popitem(last=False)
        return text


def index_status(settings: Settings) -> IndexStatus:
    """What the manifest of the index in use says."""
    from collections import Counter

    kind = store_class(settings)
    manifest = kind.status_manifest(settings)
    return IndexStatus(
        documents=len(manifest.documents),
        chunks=manifest.chunk_count,
        embedding_model=manifest.embedding_model,
        dimension=manifest.dimension,
        chunk_tokens=manifest.chunk_tokens,
        chunk_overlap=manifest.chunk_overlap,
        built_at=manifest.built_at,
        index_dir=kind.location(settings),
        sources=sorted(manifest.documents),
        kinds=dict(sorted(Counter(entry.kind for entry in manifest.documents.values()).items())),
        index_kind=manifest.index_kind,
        index_parameters=manifest.index_parameters,
        index_recall=manifest.index_recall,
    )
