"""Indexing throughput: a full build and a one-file-changed rebuild with the real embedding model.

    rag bench index                      # seeds and SciFact
    rag bench index --corpus seeds --json

Each corpus is measured in a fresh child process, so its peak RSS is its own. Corpora are copied
or written into a temporary folder: nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, SHARED, child_env, machine, peak_rss_mb

SEEDS = ROOT / "seeds"
SCIFACT = SHARED / "benchmarks" / "scifact" / "corpus.jsonl"
CORPORA = ("seeds", "scifact")


def prepare(corpus: str, folder: Path) -> int:
    """Fill `folder` with the corpus's documents; return how many."""
    folder.mkdir(parents=True, exist_ok=True)
    if corpus == "seeds":
        count = 0
        for path in sorted(SEEDS.iterdir()):
            if path.is_file():
                shutil.copy2(path, folder / path.name)
                count += 1
        return count
    if corpus == "scifact":
        if not SCIFACT.is_file():
            raise SystemExit(f"SciFact corpus not found at {SCIFACT}")
        count = 0
        with SCIFACT.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                doc = json.loads(line)
                text = f"{doc.get('title', '').strip()}\n\n{doc.get('text', '').strip()}\n"
                (folder / f"{doc['_id']}.txt").write_text(text, encoding="utf-8")
                count += 1
        return count
    raise SystemExit(f"unknown corpus {corpus!r}; choose from {', '.join(CORPORA)}")


def measure(corpus: str) -> dict:
    """Full build, one-file-changed rebuild and no-change rebuild of one corpus, in this process."""
    from rag.config import DEFAULT_EMBEDDING_MODEL, Settings
    from rag.embedding import get_embedder
    from rag.indexer import build_index

    with tempfile.TemporaryDirectory(prefix=f"bench-{corpus}-") as tmp:
        seeds = Path(tmp) / "seeds"
        docs = prepare(corpus, seeds)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            seeds_dir=seeds,
            index_dir=Path(tmp) / "index",
            embedding_model=DEFAULT_EMBEDDING_MODEL,
        )
        started = time.perf_counter()
        embedder = get_embedder(settings.embedding_model)
        embedder.embed(["warm up"])
        # Imported here so the build times below do not include one-off library imports.
        import faiss  # noqa: F401

        from rag import lexical

        lexical.build_bm25(["warm up"])
        load_seconds = time.perf_counter() - started

        full = build_index(settings, embedder=embedder)

        victim = sorted(seeds.iterdir())[0]
        with victim.open("a", encoding="utf-8") as fh:
            fh.write("\nOne more sentence, added so that this file changes.\n")
        one = build_index(settings, embedder=embedder)
        none = build_index(settings, embedder=embedder)
    return {
        "corpus": corpus,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "documents": docs,
        "embedding_model": embedder.model_id,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "batch_size": settings.embedding_batch_size,
        "load_seconds": round(load_seconds, 2),  # model and libraries, not in build times
        "full": {
            "chunks": full.chunks,
            "embedded_chunks": full.embedded_chunks,
            "seconds": full.seconds,
            "chunks_per_second": round(full.embedded_chunks / full.seconds, 1) if full.seconds else None,
        },
        "one_file_changed": {
            "chunks": one.chunks,
            "embedded_chunks": one.embedded_chunks,
            "seconds": one.seconds,
            "changed": one.changed,
        },
        "no_change": {"seconds": none.seconds, "wrote": none.wrote},
        "peak_rss_mb": round(peak_rss_mb(), 0),  # this process only: each corpus has its own
    }


def table(results: list[dict]) -> str:
    rows = [
        "| corpus | docs | run | chunks | embedded | seconds | chunks/s | peak RSS (MB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, o, n = r["full"], r["one_file_changed"], r["no_change"]
        rows.append(
            f"| {r['corpus']} | {r['documents']:,} | full build | {f['chunks']:,} | "
            f"{f['embedded_chunks']:,} | {f['seconds']:.2f} | {f['chunks_per_second']} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
        # No rate for rebuilds: their time is reading and rewriting the index, not embedding.
        rows.append(
            f"| {r['corpus']} | {r['documents']:,} | one file changed | {o['chunks']:,} | "
            f"{o['embedded_chunks']:,} | {o['seconds']:.2f} | | |"
        )
        rows.append(f"| {r['corpus']} | {r['documents']:,} | no change | | 0 | {n['seconds']:.2f} | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--worker", choices=CORPORA, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print(json.dumps(measure(args.worker)), flush=True)
        return

    corpora = CORPORA if args.corpus == "all" else (args.corpus,)
    results = []
    for corpus in corpora:
        print(f"measuring {corpus} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_index", "--worker", corpus],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            env=child_env(),
        )
        if proc.returncode != 0:
            raise SystemExit(f"{corpus}: benchmark worker failed with exit code {proc.returncode}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {"machine": machine(), "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    m = report["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, Python {m['python']}")
    print(
        f"model {results[0]['embedding_model']}, chunks of {results[0]['chunk_tokens']} tokens "
        f"({results[0]['chunk_overlap']} overlap), batch {results[0]['batch_size']}; "
        "model and library loading excluded from build times"
    )
    loads = ", ".join(f"{r['corpus']} {r['load_average'][0]}" for r in results)
    print(f"1-minute load average at the end of each run (other work on the machine skews times): {loads}")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
