"""The index build in use by one process: loaded once, reloaded when a new build is reported.

Answers always come from one complete build. The handle never builds an index itself: a missing
index is an IndexNotFoundError saying how to build one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from rag import store
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import IndexNotFoundError, LoaderError, RagError
from rag.retrieval import Retriever
from rag.types import Chunk, IndexStatus
from rag.vectorstore import open_store

# Another process (`rag index` in a terminal) may swap in a build without telling this one: the
# build pointer is looked at again at most this often. A watcher's report reloads at once.
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
        self._documents: OrderedDict[tuple[str, str, float], str | None] = OrderedDict()

    @property
    def loaded(self) -> bool:
        """Whether a build has been loaded (so there is an index to answer from)."""
        return self._retriever is not None

    def refresh(self) -> None:
        """Look for a newer build on the next read (a watcher or `index()` reported one)."""
        self._checked_at = 0.0

    def retriever(self) -> Retriever:
        """The retriever over the build in use; IndexNotFoundError when there is none."""
        with self._lock:
            now = time.monotonic()
            if self._retriever is not None and now - self._checked_at < POINTER_CHECK_SECONDS:
                return self._retriever
            if self.settings.store != "faiss":
                # A shared store (a database) always answers from its newest committed build.
                if self._retriever is None:
                    self._retriever = Retriever(open_store(self.settings), self._embedder())
                return self._retriever
            self._checked_at = now
            name = store.current_build_name(self.settings.index_dir)
            if name is None:
                raise IndexNotFoundError(
                    f"no index in {self.settings.index_dir}; run `rag index` to build it"
                )
            if self._retriever is None or self._retriever.index.name != name:
                self._retriever = self._load()
            return self._retriever

    def _load(self) -> Retriever:
        loaded = store.load(self.settings.index_dir)
        embedder = self._embedder()
        store.check_compatible(
            loaded.manifest,
            embedding_model=embedder.model_id,
            chunk_tokens=self.settings.chunk_tokens,
            chunk_overlap=self.settings.chunk_overlap,
        )
        return Retriever(loaded, embedder)

    @property
    def build(self) -> str:
        """The name of the build in use."""
        index = self.retriever().index
        return index.name if isinstance(index, store.LoadedIndex) else str(index.stats().build)

    def chunks(self) -> list[Chunk] | None:
        """Every chunk of the build in use when it is held in memory (a file store), else None."""
        index = self.retriever().index
        return index.chunks if isinstance(index, store.LoadedIndex) else None

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
        root = self.settings.seeds_dir.resolve()
        try:
            key = (self.build, source, (root / source).resolve().stat().st_mtime)
        except OSError:
            return None
        with self._lock:
            if key in self._documents:
                self._documents.move_to_end(key)
                return self._documents[key]
        from rag.loaders import document_text

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
    if settings.store == "faiss":
        manifest = store.read_manifest(settings.index_dir)
    else:
        manifest = open_store(settings).manifest()
    if manifest is None:
        raise IndexNotFoundError(f"no index in {settings.index_dir}; run `rag index` to build it")
    return IndexStatus(
        documents=len(manifest.documents),
        chunks=manifest.chunk_count,
        embedding_model=manifest.embedding_model,
        dimension=manifest.dimension,
        chunk_tokens=manifest.chunk_tokens,
        chunk_overlap=manifest.chunk_overlap,
        built_at=manifest.built_at,
        index_dir=str(settings.index_dir) if settings.store == "faiss" else settings.store,
        sources=sorted(manifest.documents),
        index_kind=manifest.index_kind,
        index_parameters=manifest.index_parameters,
        index_recall=manifest.index_recall,
    )
