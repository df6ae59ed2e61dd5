"""Find the passages that answer a question in any vector store: dense, BM25, or both fused with RRF."""

from __future__ import annotations

import bisect
import contextlib
import math
import re

from rag.embedding import Embedder, embed_cached
from rag.errors import ConfigError
from rag.faiss_store import FaissStore
from rag.store import LoadedIndex
from rag.types import Chunk, Hit, Manifest
from rag.vectorstore import ReadableStore

MODES = ("dense", "bm25", "hybrid")
RRF_K = 60  # the constant from Cormack et al.; large enough that ranks, not scores, decide
NEAR_DUPLICATE = 0.9  # word-set Jaccard above which two passages say the same thing


class Retriever:
    """Searches one store (or one loaded FAISS build); cheap to create, holds no other state."""

    def __init__(self, index: ReadableStore | LoadedIndex, embedder: Embedder) -> None:
        self.index = index  # as given: a LoadedIndex keeps its `.manifest` attribute
        self.store: ReadableStore = FaissStore.of(index) if isinstance(index, LoadedIndex) else index
        self.embedder = embedder

    @property
    def manifest(self) -> Manifest:
        """What the build searched was made from."""
        return self.store.manifest()

    def search(self, query: str, *, top_k: int = 5, mode: str = "hybrid") -> list[Hit]:
        """Up to top_k passages, best first, overlapping chunks merged and duplicates dropped."""
        if mode not in MODES:
            raise ConfigError(f"RAG_RETRIEVAL_MODE: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        depth = max(top_k * 4, 20)
        qvec = embed_cached(self.embedder, [query])[0]
        if mode == "hybrid" and hasattr(self.store, "hybrid_search"):  # one round trip (PostgreSQL)
            return _dedupe(self.store.hybrid_search(qvec, query, depth), top_k)
        # Several reads: a store that serves builds committed meanwhile (PostgreSQL) pins one for them.
        with getattr(self.store, "snapshot", contextlib.nullcontext)():
            dense = self.store.search(qvec, depth) if mode in ("dense", "hybrid") else []
            lexical = self.store.lexical_search(query, depth) if mode in ("bm25", "hybrid") else []
            ranked = _fuse(dense, lexical, mode)
            if not ranked:
                return []
            ids = [cid for cid, _ in ranked]
            chunks = self.store.chunks(ids)
            # The relevance floor reads the cosine whatever the ranking mode, so it is computed for all.
            cosine = (self.store.vectors(ids) @ qvec).astype(float).tolist()
        bm25_by_id = dict(lexical)
        hits = [
            Hit(
                chunk=chunk,
                score=round(score, 6),
                dense_score=round(cos, 6),
                bm25_score=round(bm25_by_id[cid], 6) if cid in bm25_by_id else None,
                rank=rank,
            )
            for rank, ((cid, score), chunk, cos) in enumerate(zip(ranked, chunks, cosine), start=1)
        ]
        return _dedupe(hits, top_k)


def _fuse(dense: list[tuple[str, float]], lexical: list[tuple[str, float]], mode: str) -> list[tuple[str, float]]:
    """One ranking: a single list as is, or both by reciprocal rank fusion (ties by id)."""
    if mode == "dense":
        return dense
    if mode == "bm25":
        return lexical
    fused: dict[str, float] = {}
    for results in (dense, lexical):
        for rank, (cid, _) in enumerate(results, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _dedupe(hits: list[Hit], limit: int | None = None) -> list[Hit]:
    """Merge overlapping chunks of one file into one passage; drop passages another one repeats.

    With `limit`, the first `limit` passages of the full result, computed without comparing word
    sets once `limit` are kept (later hits can then only widen a kept passage by merging into it).
    """
    kept: list[Hit] = []
    kept_words: list[set[str]] = []
    by_source: dict[str, list[int]] = {}  # positions in `kept` of each file's passages, in order
    by_size: list[tuple[int, int]] = []  # (word-set size, position), sorted
    for hit in hits:
        merged = False
        for i in by_source.get(hit.chunk.source, ()):
            a, b = kept[i].chunk, hit.chunk
            if a.start_char < b.end_char and b.start_char < a.end_char:
                kept[i] = kept[i].model_copy(update={"chunk": merge_chunks(a, b)})
                by_size.remove((len(kept_words[i]), i))
                kept_words[i] = _words(kept[i].chunk.text)
                bisect.insort(by_size, (len(kept_words[i]), i))
                merged = True
                break
        if merged or (limit is not None and len(kept) >= limit):
            continue
        words = _words(hit.chunk.text)
        # Only sets of similar size can reach the threshold: J(a, b) <= min(|a|, |b|) / max(|a|, |b|).
        n = len(words)
        lo = bisect.bisect_left(by_size, (math.floor(n * NEAR_DUPLICATE) - 1, -1))
        hi = bisect.bisect_right(by_size, (math.ceil(n / NEAR_DUPLICATE) + 1, len(kept)))
        if any(_jaccard(words, kept_words[i]) >= NEAR_DUPLICATE for _, i in by_size[lo:hi]):
            continue
        by_source.setdefault(hit.chunk.source, []).append(len(kept))
        bisect.insort(by_size, (n, len(kept)))
        kept.append(hit)
        kept_words.append(words)
    return [h.model_copy(update={"rank": r}) for r, h in enumerate(kept, start=1)]


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def merge_chunks(a: Chunk, b: Chunk) -> Chunk:
    """One chunk spanning two overlapping chunks of the same file (both are verbatim slices)."""
    first, second = (a, b) if a.start_char <= b.start_char else (b, a)
    if second.end_char <= first.end_char:
        return first
    text = first.text + second.text[first.end_char - second.start_char :]
    return first.model_copy(
        update={
            "id": f"{first.id}+{second.id}",
            "text": text,
            "end_char": second.end_char,
            "end_line": second.end_line,
            "page_end": second.page_end,
            "tokens": first.tokens + second.tokens,
        }
    )
