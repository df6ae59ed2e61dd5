"""The vector cache (a text embedded once is not embedded again, the vectors the same; a corpus's
sentence vectors saved per build) and the corpus state's background reading, with fakes."""

from __future__ import annotations

import time

import numpy as np

from rag import embedding
from rag.corpus_cache import CorpusCache, state_path, vectors_path
from rag.embedding import HashingEmbedder, embed_cached
from rag.selection import prime
from rag.types import Chunk


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


def _chunks(*texts: str) -> list[Chunk]:
    return [Chunk(id=f"c{i}", source="a.txt", ordinal=i, text=t, start_char=0, end_char=len(t), start_line=1,
                  end_line=1, tokens=len(t.split())) for i, t in enumerate(texts)]


def test_the_sentence_vectors_of_a_build_are_saved_once_and_read_back(tmp_path):
    chunks = _chunks("Katla erupted in 1918. Hekla erupted in 1947.", "Askja erupted in 1961.")
    saved = vectors_path(tmp_path, "b1", "some-model")
    first = Counting()
    n = prime(chunks, first, saved)
    assert n == len(first.embedded) == 3 and saved.is_file()
    # A new process: nothing embedded, the vectors those of a fresh embedding.
    again = Counting()
    assert prime(chunks, again, saved) == 3 and again.embedded == []
    np.testing.assert_allclose(embed_cached(again, ["Askja erupted in 1961."]),
                               HashingEmbedder().embed(["Askja erupted in 1961."]))
    assert again.embedded == []
    # Other sentences under the same name (a file left by something else): embedded, rewritten.
    other = Counting()
    assert prime(_chunks("Grimsvotn erupted in 2011."), other, saved) == 1 and other.embedded
    saved.write_bytes(b"not a vector file")
    broken = Counting()
    assert prime(chunks, broken, saved) == 3 and len(broken.embedded) == 3


def test_a_new_builds_state_prunes_the_old_builds_files(tmp_path):
    cache = CorpusCache(tmp_path)
    old_vectors = vectors_path(tmp_path, "b1", "m")
    new_vectors = vectors_path(tmp_path, "b2", "m")
    for path in (state_path(tmp_path, "b1", "f"), old_vectors, new_vectors):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    class Model:
        def save_prefix(self, system, path):
            path.write_bytes(b"state")
            return 1

    keep = state_path(tmp_path, "b2", "f")
    cache.build_now(keep, _chunks("Katla erupted in 1918."), Model())
    assert sorted(p.name for p in (tmp_path / "kv").iterdir()) == sorted([keep.name, new_vectors.name])


def test_one_corpus_state_is_read_at_a_time_and_only_the_newest_build_waits(tmp_path):
    import threading

    cache = CorpusCache(tmp_path)
    release = threading.Event()
    alive, most, saved = [0], [0], []

    class Model:
        def __init__(self):
            alive[0] += 1
            most[0] = max(most[0], alive[0])

        def save_prefix(self, system, path):
            release.wait(10)
            path.write_bytes(b"state")
            saved.append(path.name.split("-")[0])
            return 1

        def close(self):
            alive[0] -= 1

    chunks = _chunks("Katla erupted in 1918.")
    for build in ("b1", "b2", "b3"):
        assert cache.build_in_background(build, "f", chunks, Model)
    assert not cache.build_in_background("b3", "f", chunks, Model)  # already waiting
    release.set()
    deadline = time.monotonic() + 10
    while cache.building() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert saved == ["b1", "b3"] and most[0] == 1 and alive[0] == 0
    assert cache.ready("b3", "f") is not None and cache.ready("b2", "f") is None
