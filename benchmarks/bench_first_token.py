"""Time to first token of the default local model on the seeds: the old prompt against the new.

    rag bench first-token            # markdown table
    rag bench first-token --json     # one JSON object

One run, one process, the machine to itself, the same questions (the answerable questions of the
seeds dev set) for every prompt context (RAG_PROMPT_CONTEXT):

- passages: the retrieved passages whole plus highlighted sentences (the old prompt);
- windowed: the best sentences with their neighbours, within RAG_PROMPT_BUDGET_TOKENS;
- corpus:   the whole corpus read once per build and saved (cache-augmented generation); the
            per-answer prompt is the retrieval hints, the selected sentences and the question.

Each context is warmed first (the system prompt read, or the corpus state loaded), so the
figures are warm answers. Also measured: the first answer of a fresh process (`--fresh`, a new
Python process that loads the index, the model and the saved corpus state, then answers), and
answer quality per context (gold file cited, answer keywords found, refusals) on the same answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DEV_SET, NEAREST_RANK, ROOT, load_questions, percentile

CONTEXTS = ("passages", "windowed", "corpus")


def quality(answer, item: dict) -> dict:
    text = answer.text.lower()
    groups = item.get("keywords") or []
    found = sum(any(k.lower() in text for k in group) for group in groups)
    return {
        "gold_cited": bool({c.source for c in answer.citations} & set(item["sources"])),
        "keyword_recall": found / len(groups) if groups else 1.0,
        "refused": answer.refused,
    }


def corpus_state(rag) -> float | None:
    """Save the corpus state of this build now if it is missing; the seconds it took."""
    from rag.corpus_cache import state_path

    started = time.perf_counter()
    gen = rag.generator()
    path = state_path(rag.settings.index_dir, rag.handle.build, gen.fingerprint)
    if path.is_file():
        return None
    rag.corpus_cache.build_now(path, rag.handle.chunks(), gen)
    return round(time.perf_counter() - started, 1)


def run_context(rag, name: str, questions: list[dict]) -> dict:
    context, _, budget = name.partition("-")  # "windowed-120": the windowed prompt within 120 tokens
    update: dict = {"prompt_context": context}
    if budget:
        update["prompt_budget_tokens"] = int(budget)
    rag.settings = rag.settings.model_copy(update=update)
    state_seconds = corpus_state(rag) if context == "corpus" else None
    rag.warm_up()
    ttft, total, rows = [], [], []
    for item in questions:
        answer = rag.ask(item["question"])
        ttft.append(answer.timings.first_token or answer.timings.total)
        total.append(answer.timings.total)
        rows.append({"id": item["id"], "ttft": round(ttft[-1], 2), "text": answer.text[:200], **quality(answer, item)})
    n = len(rows)
    return {
        "context": name,
        "questions": n,
        "corpus_state_build_s": state_seconds,
        "ttft_p50_s": round(percentile(ttft, 50, NEAREST_RANK), 2),
        "ttft_p95_s": round(percentile(ttft, 95, NEAREST_RANK), 2),
        "total_p50_s": round(percentile(total, 50, NEAREST_RANK), 2),
        "ttft_mean_s": round(statistics.fmean(ttft), 2),
        "gold_cited": round(sum(r["gold_cited"] for r in rows) / n, 2),
        "keyword_recall": round(sum(r["keyword_recall"] for r in rows) / n, 2),
        "refused": round(sum(r["refused"] for r in rows) / n, 2),
        "answers": rows,
    }


FRESH = """
import json, sys, time
started = time.perf_counter()
from rag.config import load_settings
from rag.pipeline import Rag
rag = Rag(load_settings())
rag.warm_up()
ready = time.perf_counter() - started
answer = rag.ask(sys.argv[1])
print(json.dumps({"ready_s": ready, "first_token_s": ready + (answer.timings.first_token or answer.timings.total),
                  "text": answer.text[:120]}))
"""


def fresh_first_answer(env: dict, question: str) -> dict:
    """A new process: import, load the index and model, warm (load the saved state), answer."""
    out = subprocess.run([sys.executable, "-c", FRESH, question], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--contexts", default=",".join(CONTEXTS))
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--fresh", action="store_true", help="also time the first answer of a fresh process")
    parser.add_argument("--fresh-runs", type=int, default=1, help="fresh processes per context (the median is reported)")
    args = parser.parse_args(argv)

    from rag.config import load_settings
    from rag.pipeline import Rag

    work = Path(tempfile.mkdtemp(prefix="rag-ttft-"))
    shutil.copytree(ROOT / "seeds", work / "seeds")
    env = {**os.environ, "RAG_SEEDS_DIR": str(work / "seeds"), "RAG_INDEX_DIR": str(work / "index"),
           "RAG_GENERATOR": "llamacpp", "RAG_LLM_CONTEXT_TOKENS": "8192"}
    os.environ.update(env)
    settings = load_settings()
    rag = Rag(settings)
    rag.index()
    questions = [r for r in load_questions(DEV_SET) if r.get("sources")][: args.questions]
    results = [run_context(rag, c, questions) for c in args.contexts.split(",") if c]
    fresh = {}
    if args.fresh:
        # What a server restarted on this build finds: the saved corpus state and sentence vectors.
        rag.settings = rag.settings.model_copy(update={"prompt_context": "corpus"})
        corpus_state(rag)
        rag.warm_up()
        for context in ("windowed", "corpus"):
            runs = [fresh_first_answer({**env, "RAG_PROMPT_CONTEXT": context}, questions[0]["question"])
                    for _ in range(args.fresh_runs)]
            fresh[context] = {**sorted(runs, key=lambda r: r["first_token_s"])[len(runs) // 2],
                              "first_token_runs_s": [r["first_token_s"] for r in runs]}
    report = {
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
        "threads": rag.generator().__dict__.get("_options", {}).get("threads"),
        "results": results,
        "fresh_process": fresh,
    }
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    base = results[0]["ttft_p50_s"] if results else 0.0
    print("| prompt context | TTFT p50 | TTFT p95 | total p50 | speed-up (p50) | gold cited | keywords | refused |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['context']} | {r['ttft_p50_s']} s | {r['ttft_p95_s']} s | {r['total_p50_s']} s | "
              f"{base / r['ttft_p50_s']:.1f}x | {r['gold_cited']} | {r['keyword_recall']} | {r['refused']} |")
    for context, f in fresh.items():
        print(f"fresh process, {context}: ready {f['ready_s']} s, first token {f['first_token_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
