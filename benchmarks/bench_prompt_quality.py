"""Answer quality of the local model per prompt context, side by side in one run, same questions.

    rag bench prompt-quality                 # markdown table
    rag bench prompt-quality --json --sets seeds,clapnq

For each question set the same `rag eval qa` command (default local model, default settings) runs
once per RAG_PROMPT_CONTEXT, one after the other, so the old prompt (`passages`: the retrieved
passages whole plus highlighted sentences) and the new one (`auto`: the whole corpus read once per
build when it fits the model's context, as for the seeds, else the best sentences with their
neighbours) are measured by the same code on the same questions:

- seeds:  the product's dev set (../shared/eval/seeds_qa_dev.jsonl) over seeds/;
- clapnq: ClapNQ's first 20 answerable and first 20 unanswerable questions;
- squad2: SQuAD 2.0's tune half (its first 8 titles), a fixed random sample (seed 7).

Extra environment (RAG_...) is passed through, e.g. RAG_LLM_CONTEXT_TOKENS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import SHARED

RAG = [sys.executable, "-c", "import sys; from rag.cli import main; sys.exit(main())"]
SETS = {
    "seeds": [str(SHARED / "eval" / "seeds_qa_dev.jsonl")],
    "clapnq": [str(SHARED / "benchmarks" / "clapnq" / "qa.jsonl"), "--corpus",
               str(SHARED / "benchmarks" / "clapnq" / "corpus.jsonl"), "--answerable", "20", "--unanswerable", "20"],
    "squad2": [str(SHARED / "benchmarks" / "squad2" / "qa.jsonl"), "--corpus",
               str(SHARED / "benchmarks" / "squad2" / "corpus.jsonl"), "--titles", "tune", "--sample", "{sample}",
               "--seed", "7"],
}
FIGURES = ("hit@1", "citation_precision", "citation_recall", "keyword_recall", "rouge_l", "answer_contained",
           "refusal_accuracy", "false_refusal_rate", "latency_p50_s")


def run(name: str, context: str, sample: int, generator: str) -> dict:
    args = [a.format(sample=sample) for a in SETS[name]]
    env = {**os.environ, "RAG_PROMPT_CONTEXT": context}
    started = time.perf_counter()
    out = subprocess.run([*RAG, "eval", "qa", *args, "--generator", generator, "--json"], env=env,
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    overall = report.get("overall", report)
    return {"set": name, "context": context, "seconds": round(time.perf_counter() - started),
            **{k: overall.get(k) for k in FIGURES}, "questions": overall.get("questions")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="seeds,clapnq,squad2")
    parser.add_argument("--contexts", default="passages,auto")
    parser.add_argument("--sample", type=int, default=15, help="SQuAD 2.0: answerable and unanswerable each")
    parser.add_argument("--generator", default="llamacpp")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets.split(","):
        for context in args.contexts.split(","):
            rows.append(run(name, context, args.sample, args.generator))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "rows": rows}, indent=1))
        return 0
    print("| set | context | " + " | ".join(FIGURES) + " |")
    print("|---|---|" + "---|" * len(FIGURES))
    for r in rows:
        print(f"| {r['set']} | {r['context']} | " + " | ".join("-" if r[k] is None else str(r[k]) for k in FIGURES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
