"""The vector cache: a text embedded once is not embedded again, and the vectors are the same."""

from __future__ import annotations

import numpy as np

from rag import embedding
from rag.embedding import HashingEmbedder, embed_cached


class Counting(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed(self, texts, *, batch_size=32, progress=False):
        self.embedded += texts
        return super().embed(texts, batch_size=batch_size, progress=progress)


def test_cached_vectors_equal_fresh_ones_and_only_new_texts_are_embedded():
    e = Counting()
    first = embed_cached(e, ["alpha beta", "gamma delta", "alpha beta"])
    assert e.embedded == ["alpha beta", "gamma delta"]  # each distinct text once
    again = embed_cached(e, ["gamma delta", "epsilon"])
    assert e.embedded == ["alpha beta", "gamma delta", "epsilon"]
    np.testing.assert_allclose(again[0], first[1])
    np.testing.assert_allclose(again, HashingEmbedder().embed(["gamma delta", "epsilon"]))
    assert embed_cached(e, []).shape == (0, e.dimension)


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(embedding, "VECTOR_CACHE_SIZE", 2)
    e = Counting()
    embed_cached(e, ["a one"])
    embed_cached(e, ["b two"])
    embed_cached(e, ["a one"])  # used again: "b two" is now the oldest
    embed_cached(e, ["c three"])
    e.embedded.clear()
    embed_cached(e, ["a one", "b two"])
    assert e.embedded == ["b two"]


def test_each_embedder_has_its_own_cache():
    one, two = Counting(), Counting()
    embed_cached(one, ["same text"])
    embed_cached(two, ["same text"])
    assert two.embedded == ["same text"]
