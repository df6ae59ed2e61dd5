"""How sure the local model is that it should refuse: the probability it gives to opening its
answer with the refusal sentence, per question, on answerable and unanswerable questions.

    rag bench refusal-probability                      # ClapNQ 25 + 25, seeds set
    rag bench refusal-probability --skip 25 --json     # the next 25 + 25

Each question goes through the product's own retrieval and prompt (`Rag.request_for`); one token is
generated. Questions under the relevance floor are refused before any model call and are left out.
The table says, for each threshold, how many questions the refusal check (RAG_LLM_REFUSAL_THRESHOLD)
would refuse: on answerable questions that is a false refusal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, SHARED

THRESHOLDS = (0.02, 0.03, 0.05, 0.1, 0.2)


def probabilities(questions: Path, corpus: Path | None, count: int, skip: int) -> list[dict]:
    from rag.config import load_settings
    from rag.evaluation import qa
    from rag.generation.llamacpp import LlamaCppGenerator
    from rag.pipeline import Rag

    base = load_settings()
    if corpus:
        settings = qa.corpus_settings(corpus, base, seeds=None, index=None)
    else:
        settings = base.model_copy(update={"seeds_dir": ROOT / "seeds", "index_dir": ROOT / "index"})
    rag = Rag(settings)
    rag.index()
    items = qa.load_questions(questions)
    earlier = {i.id for i in qa.select(items, answerable=skip, unanswerable=skip)} if skip else set()
    chosen = [i for i in qa.select(items, answerable=skip + count, unanswerable=skip + count) if i.id not in earlier]
    gen = LlamaCppGenerator.from_settings(settings)
    rows = []
    for item in chosen:
        hits = rag.retrieve(item.question)
        if not hits or max(h.dense_score or 0.0 for h in hits) < settings.relevance_floor:
            continue
        started = time.perf_counter()
        p = gen.refusal_probability(rag.request_for(item.question, hits, gen))
        rows.append({"set": questions.parent.name, "id": item.id, "unanswerable": item.unanswerable,
                     "p": p, "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for name in sorted({r["set"] for r in rows}):
        for unanswerable in (False, True):
            group = [r["p"] for r in rows if r["set"] == name and r["unanswerable"] == unanswerable]
            if group:
                out.append({"set": name, "unanswerable": unanswerable, "questions": len(group),
                            "max": max(group), **{f">={t:g}": sum(p >= t for p in group) for t in THRESHOLDS}})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=25, help="answerable and unanswerable ClapNQ questions each")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N of each (a held-out slice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    clapnq = SHARED / "benchmarks" / "clapnq"
    rows = probabilities(clapnq / "qa.jsonl", clapnq / "corpus.jsonl", args.count, args.skip)
    if not args.skip:
        rows += probabilities(SHARED / "eval" / "seeds_qa_dev.jsonl", None, 100, 0)
    table = summary(rows)
    if args.json:
        print(json.dumps({"summary": table, "questions": rows}, indent=2))
        return 0
    print("| Questions | n | highest | " + " | ".join(f"≥ {t:g}" for t in THRESHOLDS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in THRESHOLDS) + " |")
    for row in table:
        kind = "unanswerable" if row["unanswerable"] else "answerable"
        print(f"| {row['set']} {kind} | {row['questions']} | {row['max']:.3f} | "
              + " | ".join(str(row[f">={t:g}"]) for t in THRESHOLDS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
