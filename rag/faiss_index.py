"""FAISS index kinds: exact (flat) for most corpora, HNSW or IVF for many chunks on one machine.

An approximate index is checked when it is built: a sample of the corpus's own vectors is searched
both exactly and approximately, and the search effort (HNSW efSearch, IVF nprobe) is doubled until
recall@10 reaches RAG_FAISS_MIN_RECALL. The kind, its parameters and the recall measured go into
the manifest.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from rag.config import Settings
from rag.types import Frozen

IndexKind = Literal["flat", "hnsw", "ivf"]
RECALL_K = 10
RECALL_SAMPLE = 500  # queries: recall@10 to about +-0.01 at 0.95, in well under a second per try
MAX_EF_SEARCH = 4096
MIN_POINTS_PER_LIST = 39  # fewer training points per IVF list and k-means centroids go astray
# The knob that trades search time for recall, per approximate kind.
EFFORT = {"hnsw": "efSearch", "ivf": "nprobe"}


class IndexSpec(Frozen):
    """Which FAISS index a build uses, with what parameters, and the recall@10 measured on it."""

    kind: IndexKind = "flat"
    parameters: dict[str, int] = {}
    recall: float | None = None  # None for flat: exact by construction


def choose(settings: Settings, chunks: int) -> IndexSpec:
    """Flat up to RAG_FAISS_FLAT_MAX chunks (or when asked), HNSW or IVF above."""
    kind = settings.faiss_index
    if chunks == 0 or kind == "flat" or (kind == "auto" and chunks <= settings.faiss_flat_max):
        return IndexSpec(kind="flat")
    if kind in ("auto", "hnsw"):
        return IndexSpec(
            kind="hnsw",
            parameters={
                "M": settings.faiss_hnsw_m,
                "efConstruction": settings.faiss_hnsw_ef_construction,
                "efSearch": settings.faiss_hnsw_ef_search,
            },
        )
    nlist = settings.faiss_ivf_nlist or round(4 * math.sqrt(chunks))
    nlist = max(1, min(nlist, chunks // MIN_POINTS_PER_LIST))
    return IndexSpec(kind="ivf", parameters={"nlist": nlist, "nprobe": min(settings.faiss_ivf_nprobe, nlist)})


def build(vectors: np.ndarray, spec: IndexSpec):
    """A FAISS inner-product index over the vectors (cosine, as they are normalised)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    p = spec.parameters
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["efConstruction"]
    elif spec.kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # the same vectors give the same lists
        index.train(vectors)
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(vectors)
    prepare(index, spec)
    return index


def prepare(index, spec: IndexSpec) -> None:
    """Set the search effort a build recorded, and let an IVF index return its vectors by row."""
    if spec.kind == "hnsw":
        index.hnsw.efSearch = spec.parameters["efSearch"]
    elif spec.kind == "ivf":
        index.nprobe = spec.parameters["nprobe"]
        index.make_direct_map()


def tune(index, vectors: np.ndarray, spec: IndexSpec, min_recall: float) -> IndexSpec:
    """Raise the search effort of an approximate index until recall@10 reaches min_recall.

    Returns the spec with the effort used and the recall measured; the recall stays below
    min_recall only when the effort hit its ceiling (HNSW efSearch 4096, IVF every list).
    """
    if spec.kind == "flat" or len(vectors) == 0:
        return spec
    queries = sample_queries(vectors)
    kth = _exact_kth(vectors, queries, RECALL_K)
    knob = EFFORT[spec.kind]
    ceiling = MAX_EF_SEARCH if spec.kind == "hnsw" else spec.parameters["nlist"]
    while True:
        recall = _recall(index, vectors, queries, kth, RECALL_K)
        effort = spec.parameters[knob]
        if recall >= min_recall or effort >= ceiling:
            return spec.model_copy(update={"recall": round(recall, 4)})
        spec = spec.model_copy(update={"parameters": {**spec.parameters, knob: min(ceiling, effort * 2)}})
        prepare(index, spec)


def sample_queries(vectors: np.ndarray, size: int = RECALL_SAMPLE) -> np.ndarray:
    """A fixed random sample of the corpus's own vectors, used as queries."""
    rows = np.random.default_rng(0).choice(len(vectors), size=min(size, len(vectors)), replace=False)
    return np.ascontiguousarray(vectors[np.sort(rows)], dtype=np.float32)


def measure_recall(index, vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Share of the true k nearest vectors (by inner product) that the index finds for the queries.

    Ties count as found: a result scoring at least the k-th exact score is as good as the one it
    displaced, so duplicate vectors do not lower the figure.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    return _recall(index, vectors, queries, _exact_kth(vectors, queries, k), k)


def _exact_kth(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k-th best exact score of each query (brute force, no copy of the vectors)."""
    import faiss

    k = min(k, len(vectors))
    scores, _ = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores[:, k - 1]


def _recall(index, vectors: np.ndarray, queries: np.ndarray, kth: np.ndarray, k: int) -> float:
    k = min(k, len(vectors))
    _, rows = index.search(queries, k)
    found = rows >= 0
    true_scores = np.einsum("qd,qkd->qk", queries, vectors[np.where(found, rows, 0)])
    good = found & (true_scores >= kth[:, None] - 1e-5)
    return float(good.sum()) / float(rows.shape[0] * k)
