"""The published configuration, reproduced: whole documents, truncated by the model, no chunking.

    rag bench beir-reference                 # SciFact test split
    rag bench beir-reference --json

MTEB's all-MiniLM-L6-v2 figure on SciFact (nDCG@10 0.645, Recall@100 0.925) embeds each
document as `title + " " + text`, which the model truncates at 256 word pieces. This script does
exactly that with the packaged model and scores the run with the same code `rag eval beir` uses
(ranx), so a match here shows the scoring is right, and the difference between this figure and
`rag eval beir --mode dense` is what the product's chunking (each document scored by its best
chunk) adds or loses. Document vectors are cached next to the `rag eval beir` build.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED

SCIFACT = SHARED / "benchmarks" / "scifact"
PUBLISHED = {"ndcg@10": 0.645, "recall@100": 0.925}  # MTEB, all-MiniLM-L6-v2 (benchmarks README)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=SCIFACT, help="BEIR folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from rag.cli import quiet_libraries

    quiet_libraries()
    from rag.config import DEFAULT_EMBEDDING_MODEL
    from rag.embedding import get_embedder
    from rag.evaluation import corpus
    from rag.evaluation.beir import load_beir, model_slug
    from rag.evaluation.metrics import BEIR_METRICS, beir_scores

    data = load_beir(args.folder, args.split)
    docs = list(corpus.read_jsonl(args.folder / "corpus.jsonl"))
    ids = [str(d["_id"]) for d in docs]
    texts = [f"{d.get('title') or ''} {d.get('text') or ''}".strip() for d in docs]

    embedder = get_embedder(DEFAULT_EMBEDDING_MODEL)
    cache = corpus.cache_root() / "beir" / data.name / f"reference-{model_slug(embedder.model_id)}.npy"
    started = time.perf_counter()
    if cache.exists() and np.load(cache).shape[0] == len(texts):
        doc_vecs, reused = np.load(cache), True
    else:
        doc_vecs, reused = embedder.embed(texts, progress=not args.json), False
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, doc_vecs)
    embed_s = time.perf_counter() - started

    qids = sorted(data.queries)
    q_vecs = embedder.embed([data.queries[q] for q in qids])
    scores = q_vecs @ doc_vecs.T
    run = {}
    for row, qid in zip(scores, qids):
        top = np.argsort(-row)[:100]
        run[qid] = {ids[i]: float(row[i]) for i in top}
    measured = beir_scores({q: data.qrels[q] for q in qids}, run, BEIR_METRICS)
    result = {
        "dataset": data.name,
        "split": args.split,
        "configuration": "whole documents (title + text), truncated at the model's 256 word pieces",
        "embedding_model": embedder.model_id,
        "documents": len(texts),
        "queries": len(qids),
        "measured": {k: round(v, 4) for k, v in measured.items()},
        "published": PUBLISHED,
        "difference_ndcg@10": round(measured["ndcg@10"] - PUBLISHED["ndcg@10"], 4),
        "embedding_seconds": None if reused else round(embed_s, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{data.name} ({args.split}), {result['configuration']}, {embedder.model_id}")
    print(f"{'metric':<12} {'measured':>9} {'published':>10}")
    for name, value in result["measured"].items():
        published = PUBLISHED.get(name)
        print(f"{name:<12} {value:>9.4f} {'-' if published is None else f'{published:.3f}':>10}")


if __name__ == "__main__":
    main()
