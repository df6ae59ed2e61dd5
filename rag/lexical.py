"""BM25 over chunk texts with bm25s: English stop words and Snowball stemming."""

from __future__ import annotations

import numpy as np

from rag.text import stemmer


def load_bm25s():
    """bm25s, with the DEBUG level it gives its own logger on import turned back down."""
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _tokenize(texts: list[str]):
    return load_bm25s().tokenize(texts, stopwords="en", stemmer=stemmer(), show_progress=False)


def build_bm25(texts: list[str]):
    """A BM25 index over the texts, rows in the order of the texts."""
    retriever = load_bm25s().BM25()
    retriever.index(_tokenize(texts), show_progress=False)
    return retriever


def search_bm25(retriever, query: str, k: int) -> list[tuple[int, float]]:
    """(row, score) pairs, best first, only rows with a positive score."""
    n_docs = int(retriever.scores["num_docs"]) if hasattr(retriever, "scores") else 0
    if n_docs == 0 or k <= 0:
        return []
    tokens = _tokenize([query])
    if not tokens.ids or not tokens.ids[0]:
        return []
    k = min(k, n_docs)
    docs, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
    out = []
    for row, score in zip(np.asarray(docs[0]).tolist(), np.asarray(scores[0]).tolist()):
        if score > 0:
            out.append((int(row), float(score)))
    return out
