"""The answerability decision on held-out questions: SQuAD 2.0's report half (its last 8 titles),
a fixed random sample of 100 answerable and 100 unanswerable questions (seed 7), extractive backend.

    .venv/bin/python benchmarks/bench_answerability.py                 # RAG_ANSWERABILITY_THRESHOLD
    .venv/bin/python benchmarks/bench_answerability.py --threshold 0.3 --json

Each question is asked through the product (`Rag.ask`, extractive backend) for its answer; the
decision is applied here, from the same retrieval and select stage output, so the figures do not
depend on how the pipeline wires it in: a question it finds unanswerable gets the refusal. Reported
without and with the decision: refusals on unanswerable questions, false refusals on answerable
ones, and gold answer contained (a normalised gold span in the answer; a refusal contains none).
Nothing here is tuned: the weights and the threshold come from `tune_answerability.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tune_answerability import SQUAD, cases, open_rag


def run(threshold: float, size: int, seed: int) -> dict:
    from rag.answerability import decide
    from rag.evaluation import qa
    from rag.evaluation.metrics import answer_contained
    from rag.evaluation.questions import load_questions, select

    rag = open_rag(SQUAD)
    items = select(load_questions(SQUAD / "qa.jsonl"), titles="report", sample_size=size, seed=seed)
    rows, spent = [], 0.0
    for item, case in zip(items, cases(rag, "squad2-report", items)):
        answer = rag.ask(item.question, generator="extractive")
        started = time.perf_counter()
        verdict = decide(case.question, case.hits, case.selection, threshold)
        spent += time.perf_counter() - started
        text = qa.strip_markers(answer.text)
        contained = None if item.unanswerable else (0.0 if answer.refused else answer_contained(text, item.answers))
        rows.append({"id": item.id, "unanswerable": item.unanswerable, "score": verdict.score,
                     "refused_before": answer.refused, "refused": answer.refused or not verdict.answerable,
                     "contained_before": contained,
                     "contained": None if contained is None else (contained if verdict.answerable else 0.0),
                     "reasons": verdict.reasons})
    return {"threshold": threshold, "questions": len(rows), "decision_ms": round(1000 * spent / max(len(rows), 1), 2),
            "before": summary(rows, ""), "after": summary(rows, "_after"), "rows": rows}


def summary(rows: list[dict], which: str) -> dict:
    """Refusal rate on unanswerable, false refusals and gold contained on answerable questions."""
    refused = "refused_before" if not which else "refused"
    contained = "contained_before" if not which else "contained"
    answerable = [r for r in rows if not r["unanswerable"]]
    unanswerable = [r for r in rows if r["unanswerable"]]
    golds = [r[contained] for r in answerable if r[contained] is not None]
    return {"answerable": len(answerable), "unanswerable": len(unanswerable),
            "refused_unanswerable": round(sum(r[refused] for r in unanswerable) / len(unanswerable), 3),
            "false_refusals": round(sum(r[refused] for r in answerable) / len(answerable), 3),
            "answer_contained": round(sum(golds) / len(golds), 3) if golds else None}


def main(argv: list[str] | None = None) -> int:
    from rag.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, default=None, help="default: RAG_ANSWERABILITY_THRESHOLD")
    parser.add_argument("--sample", type=int, default=100, help="answerable and unanswerable questions each")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    threshold = args.threshold if args.threshold is not None else load_settings().answerability_threshold
    result = run(threshold, args.sample, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"SQuAD 2.0 report half, {args.sample} + {args.sample} (seed {args.seed}), extractive, "
          f"threshold {threshold}; decision {result['decision_ms']} ms a question")
    print("| Run | refused unanswerable | false refusals | gold answer contained |")
    print("| --- | ---: | ---: | ---: |")
    for label, key in (("without the decision", "before"), ("with the decision", "after")):
        s = result[key]
        print(f"| {label} | {s['refused_unanswerable']:.3f} | {s['false_refusals']:.3f} | {s['answer_contained']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
