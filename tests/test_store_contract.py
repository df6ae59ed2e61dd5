"""The vector-store contract (tests/store_contract.py) run against the FAISS store, flat, HNSW
and IVF; then what only the FAISS store does: approximate indexes tuned to the recall floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import store_contract
from rag import faiss_folder, faiss_index
from rag.config import Settings
from rag.faiss_store import FaissStore
from rag.types import Chunk, DocumentEntry
from rag.vectorstore import open_store

KINDS = ["flat", "hnsw", "ivf"]


def faiss_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "seeds_dir": tmp_path / "seeds",
        "index_dir": tmp_path / "index",
        "embedding_model": store_contract.MODEL,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
def open_faiss(request, tmp_path: Path):
    """The FAISS store at tmp_path/index, forced to one index kind whatever its size."""

    def open_(*, writable: bool = False, check: bool = True, **overrides: object):
        settings = faiss_settings(tmp_path, faiss_index=request.param, **overrides)
        return open_store(settings, writable=writable, check=check)

    open_.kind = request.param  # type: ignore[attr-defined]
    return open_


@pytest.mark.parametrize("check", store_contract.CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_faiss_store_contract(open_faiss, check) -> None:
    check(open_faiss)


def test_the_kind_forced_is_the_kind_built(open_faiss) -> None:
    store_contract.write(open_faiss, ["a.txt", "b.md"])
    reader = open_faiss()
    assert reader.manifest().index_kind == reader.stats().index_kind == open_faiss.kind
    assert type(reader._committed().faiss_index).__name__ == {  # noqa: SLF001
        "flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat", "ivf": "IndexIVFFlat"}[open_faiss.kind]


# -- FAISS only: a reader keeps its build, approximate indexes ---------------------------------------
def test_a_reader_keeps_its_build_after_a_commit(tmp_path: Path) -> None:
    open_ = lambda **kw: open_store(faiss_settings(tmp_path), **kw)  # noqa: E731
    docs = store_contract.write(open_, ["a.txt", "b.md"])
    reader = open_()
    writer = open_(writable=True)
    writer.delete_documents(["b.md"])
    assert not reader.stale()  # nothing committed yet
    writer.commit(store_contract.fields({"a.txt": docs["a.txt"]}))
    assert set(reader.manifest().documents) == {"a.txt", "b.md"}
    basalt = docs["b.md"][1].id
    assert [cid for cid, _ in reader.lexical_search("basalt", 3)] == [basalt]
    assert reader.chunks([basalt]) == [docs["b.md"][1]]
    assert reader.all_chunks() == docs["a.txt"] + docs["b.md"]
    assert reader.stale()  # so whoever serves it opens the new build
    fresh = open_()
    assert set(fresh.manifest().documents) == {"a.txt"} and not fresh.stale()


def clustered(n: int, dim: int = 32, centers: int = 12, spread: float = 1.5, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, overlapping enough that a one-list IVF search misses."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dim))
    x = middle[rng.integers(0, centers, n)] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _write_vectors(settings: Settings, vectors: np.ndarray):
    chunks = [
        Chunk(id=f"c{i:04d}", source=f"doc{i // 10:03d}.txt", ordinal=i % 10, text=f"word{i} text",
              start_char=0, end_char=10, start_line=1, end_line=1, tokens=2)
        for i in range(len(vectors))
    ]
    documents: dict[str, DocumentEntry] = {}
    for c in chunks:
        old = documents.get(c.source)
        ids = (old.chunk_ids if old else []) + [c.id]
        documents[c.source] = DocumentEntry(path=c.source, content_hash=c.source, chunk_ids=ids, kind="txt")
    writer = open_store(settings, writable=True)
    writer.add(chunks, vectors)
    fields = store_contract.fields({}, dim=vectors.shape[1])
    manifest = writer.commit({**fields, "documents": documents})
    return chunks, manifest


# Search effort set as low as it goes, so the build has to raise it to reach the floor.
LOW_EFFORT = {
    "hnsw": {"faiss_hnsw_m": 4, "faiss_hnsw_ef_construction": 8, "faiss_hnsw_ef_search": 1},
    "ivf": {"faiss_ivf_nprobe": 1},
}


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_is_built_above_the_flat_limit_and_tuned_to_the_floor(tmp_path: Path, kind) -> None:
    vectors = clustered(600)
    settings = faiss_settings(tmp_path, faiss_index="auto" if kind == "hnsw" else kind,
                              faiss_flat_max=50, **LOW_EFFORT[kind])
    chunks, manifest = _write_vectors(settings, vectors)
    assert manifest.index_kind == kind
    knob = faiss_index.EFFORT[kind]
    assert manifest.index_parameters[knob] > 1  # raised from 1: one step was not enough
    assert manifest.index_recall is not None and manifest.index_recall >= settings.faiss_min_recall
    if kind == "ivf":
        assert manifest.index_parameters["nlist"] == 600 // faiss_index.MIN_POINTS_PER_LIST

    reader = open_store(settings)
    loaded = reader._committed()  # noqa: SLF001
    assert loaded.faiss_index.ntotal == 600
    # The effort the build settled on is the effort a reader searches with.
    if kind == "hnsw":
        assert loaded.faiss_index.hnsw.efSearch == manifest.index_parameters["efSearch"]
    else:
        assert loaded.faiss_index.nprobe == manifest.index_parameters["nprobe"]
    stats = reader.stats()
    assert stats.index_kind == kind and stats.parameters["recall_at_10"] == manifest.index_recall
    # Searched through the store, the recall matches what the manifest says, within sampling noise.
    queries = clustered(200, seed=7)
    exact = vectors @ queries.T
    found = 0
    for q in range(len(queries)):
        ids = [cid for cid, _ in reader.search(queries[q], 10)]
        tenth = np.sort(exact[:, q])[-10]
        found += sum(exact[int(cid[1:]), q] >= tenth - 1e-5 for cid in ids)
    assert found / (10 * len(queries)) >= settings.faiss_min_recall - 0.03


def test_flat_up_to_the_limit(tmp_path: Path) -> None:
    settings = faiss_settings(tmp_path, faiss_flat_max=600)
    _, manifest = _write_vectors(settings, clustered(600))
    assert (manifest.index_kind, manifest.index_parameters, manifest.index_recall) == ("flat", {}, None)


def test_measure_recall_tells_a_good_index_from_a_poor_one() -> None:
    vectors = clustered(600)
    queries = faiss_index.sample_queries(vectors, 100)
    flat = faiss_index.build(vectors, faiss_index.IndexSpec(kind="flat"))
    assert faiss_index.measure_recall(flat, vectors, queries) == 1.0
    ivf = faiss_index.build(vectors, faiss_index.IndexSpec(kind="ivf", parameters={"nlist": 15, "nprobe": 1}))
    poor = faiss_index.measure_recall(ivf, vectors, queries)
    assert poor < 0.9
    ivf.nprobe = 15  # every list: exhaustive
    assert faiss_index.measure_recall(ivf, vectors, queries) == 1.0
    # Duplicates tie: any of them is a right answer.
    doubled = np.concatenate([vectors, vectors])
    assert faiss_index.measure_recall(faiss_index.build(doubled, faiss_index.IndexSpec()), doubled, queries) == 1.0


def test_a_floor_out_of_reach_is_recorded_and_warned(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(faiss_index, "MAX_EF_SEARCH", 2)
    settings = faiss_settings(tmp_path, faiss_index="hnsw", **LOW_EFFORT["hnsw"])
    with caplog.at_level("WARNING", logger="rag.faiss_store"):
        _, manifest = _write_vectors(settings, clustered(600))
    assert manifest.index_parameters["efSearch"] == 2
    assert manifest.index_recall is not None and manifest.index_recall < settings.faiss_min_recall
    assert "RAG_FAISS_MIN_RECALL" in caplog.text


def test_old_manifests_without_an_index_kind_still_load(tmp_path: Path) -> None:
    import json

    settings = faiss_settings(tmp_path)
    store_contract.write(lambda **kw: open_store(settings, **kw), ["a.txt"])
    folder = faiss_folder.build_folder(settings.index_dir, faiss_folder.current_build_name(settings.index_dir))
    data = json.loads((folder / faiss_folder.MANIFEST).read_text(encoding="utf-8"))
    for key in ("index_kind", "index_parameters", "index_recall"):
        data.pop(key)
    (folder / faiss_folder.MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    reader = FaissStore.open(settings)
    assert reader.manifest().index_kind == "flat" and reader.stats().chunks == 4
