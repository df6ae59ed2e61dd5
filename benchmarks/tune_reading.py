"""Fit how the model's reading joins the answerability score, on tune data only.

    rag bench tune-reading                    # local model, windowed prompt
    rag bench tune-reading --squad 80 --clapnq 30 --json    # a larger sample

The reading (rag/judge.py) is the answering model's share of "yes" when asked, in one short pass,
whether the passages it was given state the answer. For a seeded sample of SQuAD 2.0's tune half
(its first 8 titles; N answerable + N unanswerable) and of ClapNQ (M + M), each question goes
through the product's retrieve and select stages (cached, see tune_answerability.py), the local
model's request is built as the pipeline builds it (RAG_PROMPT_CONTEXT, default windowed: these
corpora do not fit the model's context), and three figures are read: the feature score, the
reading, and the first-token refusal probability. Readings are cached per model and prompt
context under ~/.cache/rag/eval/, so a refit costs seconds.

Fitted: a logistic model `a * logit(feature score) + b * logit(reading) + c` (READING_WEIGHTS in
rag/answerability.py), and the highest threshold keeping the local model's false refusals
(relevance floor or score under the threshold) within 10 % on each tune set. Reported per set: AUC
of the feature score, the reading, the refusal probability and the combined score; refusals of
unanswerable questions and false refusals at the chosen threshold. SQuAD 2.0's report half is
never read here (bench_answerability.py reports on it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from benchmarks.tune_answerability import CLAPNQ, SQUAD, auc, cases, fit, open_rag


def readings(rag, gen, items, name: str) -> list[dict]:
    """Feature score, reading and refusal probability of each case, cached by question."""
    from rag.answerability import features, score
    from rag.evaluation.corpus import cache_root

    context = rag.settings.prompt_context
    cache = cache_root() / "eval" / f"reading-{name}-{gen.fingerprint}-{context}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    stored = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            stored[json.loads(line)["question"]] = json.loads(line)
    rows = []
    for n, case in enumerate(items, start=1):
        floor = not case.hits or max(h.dense_score or 0.0 for h in case.hits) < rag.settings.relevance_floor
        if case.question not in stored:
            record = {"question": case.question, "reading": None, "refusal": None}
            if not floor:
                request = rag.request_for(case.question, case.hits, gen, case.selection)
                record["reading"] = gen.judge(request)
                record["refusal"] = gen.refusal_probability(request)
            with cache.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(record) + "\n")
            stored[case.question] = record
            print(f"{name}: {n}/{len(items)} reading {record['reading']}", file=sys.stderr, flush=True)
        record = stored[case.question]
        rows.append({"set": name, "answerable": case.answerable, "floor": floor,
                     "features": score(features(case.question, case.hits, case.selection)),
                     "reading": record["reading"], "refusal": record["refusal"]})
    return rows


def logits(rows: list[dict]) -> np.ndarray:
    from rag.judge import logit

    return np.array([[logit(r["features"]), logit(r["reading"] if r["reading"] is not None else 0.5)] for r in rows])


# The bound on false refusals per tune set: one answerable question in ten (ClapNQ's 10).
READ_FALSE_REFUSALS = 0.10


def choose(rows: list[dict], scores: np.ndarray, limit: float = READ_FALSE_REFUSALS) -> float:
    best = 0.0
    for t in np.arange(0.0, 1.0, 0.005):
        if all(_rates(rows, scores, t, name)[1] <= limit for name in {r["set"] for r in rows}):
            best = float(round(t, 3))
    return best


def _rates(rows: list[dict], scores: np.ndarray, threshold: float, name: str) -> tuple[float, float]:
    """(Refused unanswerable, false refusals) of one set: relevance floor or score under threshold."""
    refused = np.array([r["floor"] for r in rows]) | (scores < threshold)
    mask = np.array([r["set"] == name for r in rows])
    ans = np.array([r["answerable"] for r in rows])
    return float(refused[mask & ~ans].mean()), float(refused[mask & ans].mean())


def main(argv: list[str] | None = None) -> int:
    from rag.evaluation.questions import load_questions, select

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", type=int, default=40, help="answerable and unanswerable each")
    parser.add_argument("--clapnq", type=int, default=10, help="answerable and unanswerable each")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true", help="record the fit in rag/data/answerability.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAG_PROMPT_CONTEXT", "windowed")
    rows = []
    for folder, name, n, titles in ((SQUAD, "squad2-tune", args.squad, "tune"), (CLAPNQ, "clapnq", args.clapnq, None)):
        rag = open_rag(folder)
        rag.settings = rag.settings.model_copy(update={"generator": "llamacpp"})
        gen = rag.warm_up("llamacpp")
        items = select(load_questions(folder / "qa.jsonl"), titles=titles, answerable=n, unanswerable=n,
                       sample_size=n, seed=args.seed)
        rows += readings(rag, gen, cases(rag, name, items), name)
    used = [r for r in rows if not r["floor"] and r["reading"] is not None]
    x, y = logits(used), np.array([r["answerable"] for r in used], dtype=float)
    # Every input can only raise the score: weights kept non-negative, on the raw scale.
    w, b = fit(x, y, signs=np.ones(x.shape[1]), standardise=False, rate=0.2)
    combined = 1.0 / (1.0 + np.exp(-(logits(rows) @ w + b)))
    threshold = choose(rows, combined)
    report = {"weights": [round(float(w[0]), 4), round(float(w[1]), 4), round(b, 4)], "threshold": threshold,
              "prompt_context": os.environ["RAG_PROMPT_CONTEXT"], "sets": []}
    for name in sorted({r["set"] for r in rows}):
        group = [(r, s) for r, s in zip(rows, combined) if r["set"] == name and not r["floor"] and r["reading"] is not None]
        labels = np.array([r["answerable"] for r, _ in group], dtype=float)
        refused, false = _rates(rows, combined, threshold, name)
        report["sets"].append({
            "set": name, "questions": sum(r["set"] == name for r in rows),
            "auc_features": round(auc(np.array([r["features"] for r, _ in group]), labels), 3),
            "auc_reading": round(auc(np.array([r["reading"] for r, _ in group]), labels), 3),
            "auc_refusal": round(auc(-np.array([r["refusal"] for r, _ in group]), labels), 3),
            "auc_combined": round(auc(np.array([s for _, s in group]), labels), 3),
            "refused_unanswerable": round(refused, 3), "false_refusals": round(false, 3)})
    if args.write:
        from benchmarks.common import write_fit

        write_fit("reading", {"weights": report["weights"], "threshold": threshold}, argv=argv,
                  fitted_on=f"SQuAD 2.0 tune half ({args.squad} + {args.squad}) and ClapNQ ({args.clapnq} + "
                            f"{args.clapnq}), the default local model reading the {report['prompt_context']} prompt")
    print(json.dumps(report, indent=1) if args.json else
          f"READING_WEIGHTS = {tuple(report['weights'])}\nthreshold {threshold}\n" +
          "\n".join(json.dumps(s) for s in report["sets"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
