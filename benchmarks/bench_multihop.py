"""Multi-hop retrieval on HotpotQA: how often both gold paragraphs of a question are among the top
k passages, with one retrieval and with a second hop fused with the first.

    rag bench multihop              # dense, bm25, hybrid at k = 5, 10, 20
    rag bench multihop --json       # also each question's figures

The corpus (991 paragraphs, `<id>.txt` each) is indexed with the product's loader, chunker and
index in ~/.cache/rag/eval/hotpotqa/ (the folder `rag eval qa --corpus` uses), and searched with
the product's Retriever. The second hop asks the question again with words from the first hop's
top passage added, and the two rankings are fused by reciprocal rank fusion (the product's RRF
constant); it is measured with three kinds of added words, in the same run:

* title    - the top passage's first line (a HotpotQA paragraph's title: an entity name);
* sentence - the top passage's best sentence for the question, ranked by the product's select stage;
* passage  - the whole top passage.

Both hops ask for k passages, and the fused ranking is cut to k, so each row compares k passages
with k passages. A question counts as "both gold" when the k passages come from files that include
both of its gold paragraphs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.common import SHARED

HOTPOTQA = SHARED / "benchmarks" / "hotpotqa"
KS = (5, 10, 20)
MODES = ("dense", "bm25", "hybrid")
HOPS = ("title", "sentence", "passage")


def rrf(*rankings: list[str], k: int) -> list[str]:
    """The first k items of the rankings fused by reciprocal rank fusion (ties: first seen)."""
    from rag.retrieval import RRF_K

    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores, key=lambda item: (-scores[item], order[item]))[:k]


def files(hits) -> list[str]:
    """The distinct source files of passages, in rank order."""
    from rag.evaluation.metrics import distinct

    return distinct(h.chunk.source for h in hits)


def second_query(question: str, top, how: str, embedder) -> str:
    """The question with words from the first hop's top passage added."""
    from rag.selection import select

    text = top.chunk.text.strip()
    if how == "title":
        return f"{question} {text.splitlines()[0]}"
    if how == "sentence":
        ranked = select(question, [top], embedder).ranked
        return f"{question} {ranked[0].sentence}" if ranked else question
    return f"{question} {text}"


def _title_in(question: str, top) -> bool:
    from rag.evaluation.metrics import normalize_answer

    title = normalize_answer(top.chunk.text.strip().splitlines()[0].split(" (")[0])
    return bool(title) and f" {title} " in f" {normalize_answer(question)} "


def measure(limit: int | None) -> tuple[list[dict], dict]:
    from rag.config import load_settings
    from rag.evaluation import corpus, qa
    from rag.pipeline import Rag

    settings = qa.corpus_settings(HOTPOTQA / "corpus.jsonl", load_settings(), seeds=None, index=None)
    rag = Rag(settings)
    started = time.perf_counter()
    rag.index()
    index_seconds = time.perf_counter() - started
    retriever = rag.retriever()
    items = qa.load_questions(HOTPOTQA / "qa.jsonl")[:limit]
    kinds = {str(r["id"]): r.get("type", "") for r in corpus.read_jsonl(HOTPOTQA / "qa.jsonl")}
    rows = []
    search_seconds = 0.0
    searches = 0
    for n, item in enumerate(items, start=1):
        gold = set(item.sources)
        row = {"id": item.id, "type": kinds.get(item.id, ""), "gold": sorted(gold)}
        for mode in MODES:
            for k in KS:
                t0 = time.perf_counter()
                first = retriever.search(item.question, top_k=k, mode=mode)
                search_seconds += time.perf_counter() - t0
                searches += 1
                one = files(first)[:k]
                row[f"{mode}@{k}"] = gold <= set(one)
                if first and (mode, k) == ("hybrid", KS[0]):
                    row["title_in_question"] = _title_in(item.question, first[0])
                row[f"{mode}@{k}:any"] = bool(gold & set(one))
                for how in HOPS:
                    query = second_query(item.question, first[0], how, rag.embedder) if first else item.question
                    t0 = time.perf_counter()
                    second = files(retriever.search(query, top_k=k, mode=mode))
                    search_seconds += time.perf_counter() - t0
                    searches += 1
                    row[f"{mode}@{k}+{how}"] = gold <= set(rrf(one, second, k=k))
        rows.append(row)
        print(f"\r{n}/{len(items)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    info = {
        "questions": len(items),
        "embedding_model": rag.embedder.model_id,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "index_dir": str(settings.index_dir),
        "index_seconds": round(index_seconds, 1),
        "search_ms_mean": round(1000 * search_seconds / max(1, searches), 1),
        # How often the hybrid top passage's title (less any "(...)") is named in the question.
        "top_title_in_question": sum(bool(r.get("title_in_question")) for r in rows),
    }
    return rows, info


def summary(rows: list[dict]) -> list[dict]:
    """Per mode and k: the share of questions with any gold paragraph and with both in the top k,
    with one hop and with each second hop; for each second hop, the questions it gained (both gold
    now, not before) and lost; bridge questions (79 of the 100) apart."""
    out = []
    bridge = [r for r in rows if r["type"] == "bridge"]
    for mode in MODES:
        for k in KS:
            key = f"{mode}@{k}"
            line = {"mode": mode, "k": k, "any_gold": _share(rows, f"{key}:any"), "both_gold": _share(rows, key)}
            for how in HOPS:
                line[f"+{how}"] = _share(rows, f"{key}+{how}")
            for how in HOPS[1:]:
                gained = sum(1 for r in rows if r[f"{key}+{how}"] and not r[key])
                lost = sum(1 for r in rows if r[key] and not r[f"{key}+{how}"])
                line[f"{how}: gained/lost"] = f"{gained}/{lost}"
            line["bridge: both_gold"] = _share(bridge, key)
            line["bridge: +passage"] = _share(bridge, f"{key}+passage")
            out.append(line)
    return out


def _share(rows: list[dict], key: str) -> float | None:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 3) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every question")
    args = parser.parse_args(argv)
    rows, info = measure(args.limit)
    table = summary(rows)
    if args.json:
        print(json.dumps({"info": info, "summary": table, "questions": rows}, indent=2))
        return 0
    print(json.dumps(info))
    headers = list(table[0])
    print("| " + " | ".join(headers) + " |")
    print("| " + " | ".join("---" if h == "mode" else "---:" for h in headers) + " |")
    for line in table:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in line.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
