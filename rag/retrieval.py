"""Find the passages that answer a question in any vector store: dense, BM25, or both fused with RRF."""

from __future__ import annotations

import bisect
import math
import re

from rag.embedding import Embedder, embed_cached
from rag.errors import ConfigError
from rag.types import Chunk, Hit, Manifest
from rag.vectorstore import RRF_K as RRF_K  # re-exported: the fusion constant benchmarks compare with
from rag.vectorstore import ReadableStore

MODES = ("dense", "bm25", "hybrid")
NEAR_DUPLICATE = 0.9  # word-set Jaccard above which two passages say the same thing


class Retriever:
    """Searches one store; cheap to create, holds no other state."""

    def __init__(self, store: ReadableStore, embedder: Embedder) -> None:
        self.store = store
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
        return _dedupe(self.store.ranked(qvec, query, depth, mode), top_k)


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
