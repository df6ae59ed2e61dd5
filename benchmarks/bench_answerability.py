"""The answerability decision on held-out questions: SQuAD 2.0's report half (its last 8 titles),
a fixed random sample of 100 answerable and 100 unanswerable questions (seed 7), extractive backend.

    rag bench answerability                  # the tuned threshold
    rag bench answerability --threshold 0.25 0.3 --json

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

from benchmarks.tune_answerability import SQUAD, cases, open_rag


def run(size: int, seed: int) -> dict:
    """Ask the sample through the product and score each question's passages."""
    from rag.answerability import features, score
    from rag.evaluation import qa
    from rag.evaluation.metrics import answer_contained
    from rag.evaluation.questions import load_questions, select

    rag = open_rag(SQUAD)
    items = select(load_questions(SQUAD / "qa.jsonl"), titles="report", sample_size=size, seed=seed)
    rows, spent = [], 0.0
    for item, case in zip(items, cases(rag, "squad2-report", items)):
        answer = rag.ask(item.question, generator="extractive")
        started = time.perf_counter()
        value = score(features(case.question, case.hits, case.selection))  # what decide() compares
        spent += time.perf_counter() - started
        text = qa.strip_markers(answer.text)
        contained = None if item.unanswerable else (0.0 if answer.refused else answer_contained(text, item.answers))
        rows.append({"id": item.id, "question": case.question, "unanswerable": item.unanswerable,
                     "score": round(value, 4), "refused": answer.refused, "contained": contained})
    return {"questions": len(rows), "decision_ms": round(1000 * spent / max(len(rows), 1), 2), "rows": rows}


def summary(rows: list[dict], threshold: float | None) -> dict:
    """Refusal rate on unanswerable, false refusals and gold contained on answerable questions,
    with the decision at this threshold applied (None: the product as it is, without it)."""
    def refused(r: dict) -> bool:
        return r["refused"] or (threshold is not None and r["score"] < threshold)

    answerable = [r for r in rows if not r["unanswerable"]]
    unanswerable = [r for r in rows if r["unanswerable"]]
    golds = [0.0 if refused(r) else r["contained"] for r in answerable if r["contained"] is not None]
    return {"threshold": threshold, "answerable": len(answerable), "unanswerable": len(unanswerable),
            "refused_unanswerable": round(sum(map(refused, unanswerable)) / len(unanswerable), 3),
            "false_refusals": round(sum(map(refused, answerable)) / len(answerable), 3),
            "answer_contained": round(sum(golds) / len(golds), 3) if golds else None}


def main(argv: list[str] | None = None) -> int:
    from rag.answerability import TUNED_THRESHOLD
    from rag.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, nargs="+", default=None,
                        help="one or more thresholds (default: RAG_ANSWERABILITY_THRESHOLD if set, "
                             "else the tuned one)")
    parser.add_argument("--sample", type=int, default=100, help="answerable and unanswerable questions each")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    thresholds = args.threshold or [load_settings().answerability_threshold or TUNED_THRESHOLD]
    result = run(args.sample, args.seed)
    result["summary"] = [summary(result["rows"], t) for t in [None, *thresholds]]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"SQuAD 2.0 report half, {args.sample} + {args.sample} (seed {args.seed}), extractive backend; "
          f"the decision takes {result['decision_ms']} ms a question")
    print("| Run | refused unanswerable | false refusals | gold answer contained |")
    print("| --- | ---: | ---: | ---: |")
    for s in result["summary"]:
        label = "without the decision" if s["threshold"] is None else f"with the decision, threshold {s['threshold']:g}"
        print(f"| {label} | {s['refused_unanswerable']:.3f} | {s['false_refusals']:.3f} | {s['answer_contained']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
