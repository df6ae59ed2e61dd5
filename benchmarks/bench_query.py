"""Query-time latency: retrieval per mode, and time to first token / total per answer per backend.

    rag bench query            # markdown table
    rag bench query --json     # one JSON object

Retrieval runs the questions of the seeds dev set (repeated to --queries) through Rag.retrieve on
an index of the seeds folder with the real default embedding model (query embedding included).
Answers run answerable dev questions through Rag.ask_stream: all of them for extractive, the first
--llm-questions for the local models (slow on 2 cores). The index is built in a temporary folder
unless --index is given, so the repository's own index is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEV_SET, NEAREST_RANK, ROOT, load_questions, percentile

MODES = ("dense", "bm25", "hybrid")
BACKENDS = ("extractive", "llamacpp-qwen", "llamacpp-smollm2")


def bench_retrieval(rag, questions: list[str], total: int) -> dict[str, dict]:
    """p50/p95 of Rag.retrieve per mode over `total` queries (the questions, repeated)."""
    queries = (questions * (total // len(questions) + 1))[:total]
    for mode in MODES:  # warm-up: load the index, the model, the BM25 tables
        rag.retrieve(questions[0], mode=mode)
    out = {}
    for mode in MODES:
        times = []
        for q in queries:
            t = time.perf_counter()
            rag.retrieve(q, mode=mode)
            times.append(time.perf_counter() - t)
        out[mode] = {
            "queries": len(times),
            "p50_ms": round(percentile(times, 50, NEAREST_RANK) * 1000, 2),
            "p95_ms": round(percentile(times, 95, NEAREST_RANK) * 1000, 2),
            "mean_ms": round(statistics.fmean(times) * 1000, 2),
        }
    return out


def bench_answers(rag, generator: str, questions: list[str]) -> dict:
    """Time to first piece and total per answer, as a user of ask_stream sees them."""
    load_started = time.perf_counter()
    rag.generator(generator)  # load the model outside the timed answers
    load_seconds = time.perf_counter() - load_started
    ttft, totals, pieces, refused = [], [], [], 0
    for q in questions:
        started = time.perf_counter()
        first = None
        stream = rag.ask_stream(q, generator=generator)
        n = 0
        for _ in stream:
            n += 1
            if first is None:
                first = time.perf_counter() - started
        totals.append(time.perf_counter() - started)
        ttft.append(first if first is not None else totals[-1])
        pieces.append(n)
        refused += bool(stream.answer and stream.answer.refused)
    return {
        "answers": len(questions),
        "load_s": round(load_seconds, 2),
        "ttft_p50_s": round(percentile(ttft, 50, NEAREST_RANK), 3),
        "ttft_max_s": round(max(ttft), 3),
        "total_p50_s": round(percentile(totals, 50, NEAREST_RANK), 3),
        "total_max_s": round(max(totals), 3),
        "pieces_per_s": round(sum(pieces) / sum(t - f for t, f in zip(totals, ttft)), 1)
        if sum(t - f for t, f in zip(totals, ttft)) > 0 else None,
        "refused": refused,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dev-set", type=Path, default=DEV_SET)
    parser.add_argument("--seeds", type=Path, default=ROOT / "seeds")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default: a temporary one)")
    parser.add_argument("--queries", type=int, default=100, help="retrieval queries per mode")
    parser.add_argument("--llm-questions", type=int, default=3, help="answers per local model")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {', '.join(BACKENDS)}")
    parser.add_argument("--llm-threads", type=int, default=None, help="RAG_LLM_THREADS for the local models")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rag.cli import quiet_libraries
    from rag.config import DEFAULT_EMBEDDING_MODEL, Settings
    from rag.embedding import get_embedder
    from rag.models import default_llm_path, small_llm_path
    from rag.pipeline import Rag

    quiet_libraries()
    rows = load_questions(args.dev_set)
    questions = [r["question"] for r in rows]
    answerable = [r["question"] for r in rows if not r.get("unanswerable")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")

    tmp = None
    index_dir = args.index
    if index_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_query_")
        index_dir = Path(tmp.name) / "index"
    load_before = os.getloadavg()[0]
    embedder = get_embedder(DEFAULT_EMBEDDING_MODEL)
    base = dict(seeds_dir=args.seeds, index_dir=index_dir, embedding_model=DEFAULT_EMBEDDING_MODEL,
                llm_threads=args.llm_threads)
    rag = Rag(Settings(_env_file=None, **base), embedder=embedder)
    report = rag.index()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_start": round(load_before, 2)},
        "index": {"documents": len(report.added) + len(report.changed) + len(report.unchanged),
                  "chunks": report.chunks, "embedding_model": DEFAULT_EMBEDDING_MODEL},
        "retrieval": bench_retrieval(rag, questions, args.queries),
        "answers": {},
    }

    for backend in backends:
        if backend == "extractive":
            result["answers"][backend] = bench_answers(rag, "extractive", answerable)
            continue
        path = default_llm_path() if backend == "llamacpp-qwen" else small_llm_path()
        if path is None:
            result["answers"][backend] = {"skipped": "model not installed"}
            continue
        llm_rag = Rag(Settings(_env_file=None, **base, llm_model_path=path), embedder=embedder)
        result["answers"][backend] = bench_answers(llm_rag, "llamacpp", answerable[: args.llm_questions])
        result["answers"][backend]["model"] = path.name
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    if tmp is not None:
        tmp.cleanup()

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    m, idx = result["machine"], result["index"]
    lines = [
        f"Index: {idx['documents']} documents, {idx['chunks']} chunks, {idx['embedding_model']}; "
        f"{m['cpus']} CPUs, 1-min load {m['loadavg_1m_start']} at start, {m['loadavg_1m_end']} at end.",
        "",
        "| retrieval mode | queries | p50 ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, r in result["retrieval"].items():
        lines.append(f"| {mode} | {r['queries']} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} |")
    lines += [
        "",
        "| backend | answers | load s | first token p50 s | first token max s | total p50 s | total max s | pieces/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["answers"].items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | |")
            continue
        label = f"{name} ({r['model']})" if "model" in r else name
        lines.append(
            f"| {label} | {r['answers']} | {r['load_s']} | {r['ttft_p50_s']} | {r['ttft_max_s']} | "
            f"{r['total_p50_s']} | {r['total_max_s']} | {r['pieces_per_s']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
