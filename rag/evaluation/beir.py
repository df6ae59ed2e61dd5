"""Retrieval quality on a BEIR folder, with the product's own chunking, index and retriever.

Each document becomes `<id>.txt` (title, blank line, text) in a cache folder outside the
repository and is indexed incrementally there, so a second run reuses the build. A document
longer than one chunk is scored by its best chunk: the retriever is asked for enough chunks to
cover the requested number of documents and each document keeps its first (best) rank.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from rag.config import Settings, load_settings
from rag.embedding import Embedder, canonical_model_id
from rag.errors import ConfigError
from rag.evaluation import corpus
from rag.evaluation.metrics import BEIR_METRICS, beir_scores, percentile
from rag.retrieval import MODES

DOCS_PER_QUERY = 100  # Recall@100 needs the top 100 documents


@dataclass
class BeirData:
    """The queries and relevance judgements of one split."""

    name: str
    folder: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass
class BeirReport:
    name: str
    split: str
    mode: str
    embedding_model: str
    chunk_tokens: int
    chunk_overlap: int
    documents: int
    chunks: int
    queries: int
    scores: dict[str, float]
    index_seconds: float
    index_reused: bool
    embedded_chunks: int
    query_seconds: float
    latency_p50: float | None
    latency_p95: float | None
    seeds_dir: str
    index_dir: str
    top_k_chunks: int
    run: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "dataset": self.name,
            "split": self.split,
            "mode": self.mode,
            "embedding_model": self.embedding_model,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "documents": self.documents,
            "chunks": self.chunks,
            "queries": self.queries,
            "scores": self.scores,
            "indexing": {
                "reused": self.index_reused,
                "seconds": round(self.index_seconds, 3),
                "embedded_chunks": self.embedded_chunks,
                "documents_per_s": _rate(self.documents, self.index_seconds, self.index_reused),
                "chunks_per_s": _rate(self.embedded_chunks, self.index_seconds, self.index_reused),
            },
            "querying": {
                "seconds": round(self.query_seconds, 3),
                "queries_per_s": _rate(self.queries, self.query_seconds, False),
                "latency_p50_ms": None if self.latency_p50 is None else round(self.latency_p50 * 1000, 2),
                "latency_p95_ms": None if self.latency_p95 is None else round(self.latency_p95 * 1000, 2),
                "top_k_chunks": self.top_k_chunks,
            },
            "seeds_dir": self.seeds_dir,
            "index_dir": self.index_dir,
        }


def _rate(count: int, seconds: float, reused: bool) -> float | None:
    if reused or seconds <= 0 or count <= 0:
        return None
    return round(count / seconds, 2)


def load_beir(folder: Path, split: str = "test") -> BeirData:
    """Queries and qrels of a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""
    folder = Path(folder)
    for needed in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / needed).is_file():
            raise ConfigError(f"{folder} is not a BEIR folder: {needed} is missing")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise ConfigError(
            f"no qrels for split {split!r} in {folder / 'qrels'}"
            + (f"; available: {', '.join(found)}" if found else "")
        )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3:
                continue
            try:
                relevance = int(float(row[2]))
            except ValueError:  # the header line
                continue
            if relevance > 0:
                qrels.setdefault(row[0], {})[row[1]] = relevance
    queries = {
        str(q["_id"]): str(q.get("text", ""))
        for q in corpus.read_jsonl(folder / "queries.jsonl")
        if str(q.get("_id")) in qrels
    }
    qrels = {q: docs for q, docs in qrels.items() if q in queries}
    return BeirData(name=folder.resolve().name, folder=folder, queries=queries, qrels=qrels)


def model_slug(model_id: str) -> str:
    """A folder-safe short name of an embedding model id."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model_id.rstrip("/").split("/")[-1]) or "model"


def index_folder(root: Path, settings: Settings) -> Path:
    """The index folder of a cached corpus, named for the model and chunking (so switching either
    keeps both builds); the one namer of evaluation index folders."""
    model = model_slug(canonical_model_id(settings.embedding_model))
    return root / f"index-{model}-c{settings.chunk_tokens}o{settings.chunk_overlap}"


def beir_settings(data: BeirData, cache: Path | None = None, base: Settings | None = None) -> Settings:
    """Settings whose seeds and index folders are this data set's cache folders.

    The index folder names the model and chunking, so switching either keeps both builds.
    """
    base = base or load_settings()
    root = (cache or corpus.cache_root()) / "beir" / data.name
    return base.model_copy(update={"seeds_dir": root / "seeds", "index_dir": index_folder(root, base)})


def evaluate_beir(
    folder: Path,
    *,
    mode: str = "dense",
    split: str = "test",
    limit_queries: int | None = None,
    cache: Path | None = None,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    docs_per_query: int = DOCS_PER_QUERY,
    progress=None,
) -> BeirReport:
    """Index the folder's corpus (reusing a previous build) and score retrieval with ranx."""
    from rag.pipeline import Rag

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    data = load_beir(folder, split)
    settings = beir_settings(data, cache, settings)
    names = corpus.write_corpus(Path(folder) / "corpus.jsonl", settings.seeds_dir)
    doc_of_file = {name: doc_id for doc_id, name in names.items()}

    rag = Rag(settings, embedder=embedder)
    started = time.perf_counter()
    report = rag.index(progress=progress is not None)
    index_seconds = time.perf_counter() - started
    retriever = rag.retriever()
    manifest = retriever.manifest
    reused = report.embedded_chunks == 0 and not report.wrote
    if reused:
        index_seconds = manifest.build_seconds

    # Enough chunks that `docs_per_query` distinct documents survive, with room for documents
    # split into several chunks (each document keeps only its best chunk).
    chunks_per_doc = manifest.chunk_count / max(1, len(manifest.documents))
    top_k = min(manifest.chunk_count, math.ceil(docs_per_query * chunks_per_doc * 1.5) + 10)

    query_ids = sorted(data.queries)
    if limit_queries is not None:
        query_ids = query_ids[: max(0, limit_queries)]
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    loop_started = time.perf_counter()
    for n, qid in enumerate(query_ids, start=1):
        t0 = time.perf_counter()
        hits = retriever.search(data.queries[qid], top_k=top_k, mode=mode)
        latencies.append(time.perf_counter() - t0)
        ranked: dict[str, float] = {}
        for hit in hits:
            doc_id = doc_of_file.get(hit.chunk.source)
            if doc_id is None or doc_id in ranked:
                continue
            # Distinct descending scores: ranx sorts by score, and ties would blur the order.
            ranked[doc_id] = float(docs_per_query - len(ranked))
            if len(ranked) >= docs_per_query:
                break
        run[qid] = ranked
        if progress is not None:
            progress(n, len(query_ids))
    query_seconds = time.perf_counter() - loop_started

    qrels = {q: data.qrels[q] for q in query_ids}
    scores = beir_scores(qrels, run, BEIR_METRICS) if qrels else {m: 0.0 for m in BEIR_METRICS}
    return BeirReport(
        name=data.name,
        split=split,
        mode=mode,
        embedding_model=manifest.embedding_model,
        chunk_tokens=manifest.chunk_tokens,
        chunk_overlap=manifest.chunk_overlap,
        documents=len(manifest.documents),
        chunks=manifest.chunk_count,
        queries=len(query_ids),
        scores=scores,
        index_seconds=index_seconds,
        index_reused=reused,
        embedded_chunks=report.embedded_chunks if not reused else manifest.chunk_count,
        query_seconds=query_seconds,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        seeds_dir=str(settings.seeds_dir),
        index_dir=str(settings.index_dir),
        top_k_chunks=top_k,
        run=run,
    )
