"""A folder many times the model's context: what the local model reads for each question.

    rag bench folder                                  # markdown table
    rag bench folder --json --questions 10 --seed 11  # one JSON object

All 646 SQuAD 2.0 paragraphs (../shared/benchmarks/squad2/corpus.jsonl, about 117,000 tokens,
14x the default model's 8,192-token context) written as one file each, indexed as a user's
folder; answerable questions of the report half of the titles (never tuned on), a seeded
sample. One process, the machine to itself, the default local model; for each prompt context
(RAG_PROMPT_CONTEXT) in turn, the same questions, warm (the system prompt read; for `stitched`,
the chosen passages' states saved first, timed apart):

- passages: the retrieved passages whole;
- windowed: the best sentences with their neighbours (RAG_PROMPT_BUDGET_TOKENS);
- windowed-<n>: the same within n tokens (a smaller reading);
- stitched: the best passages' states, saved once per passage, put together (rag.passage_states).

Also in the same run: the seconds the model takes to read a 1,000-token prompt (the yardstick of
the targets), and per context the first-word time p50/max and their ratio to it, the gold answer
contained, refusals, gold file cited, disk and memory. Every answer includes the answerability
reading and the draft check, as the product answers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import SHARED, log, machine, percentile, rss_mb

SQUAD = SHARED / "benchmarks" / "squad2"
CONTEXTS = ("passages", "windowed", "windowed-120", "stitched")


def folder_settings(work: Path):
    """Settings of a user's folder of the SQuAD paragraphs (written once into the cache)."""
    from rag.config import load_settings
    from rag.evaluation.corpus import write_corpus

    seeds = work / "seeds"
    write_corpus(SQUAD / "corpus.jsonl", seeds)
    os.environ.update({"RAG_SEEDS_DIR": str(seeds), "RAG_INDEX_DIR": str(work / "index"), "RAG_GENERATOR": "llamacpp"})
    return load_settings()


def questions(count: int, seed: int, titles: str = "report"):
    from rag.evaluation.questions import load_questions, select

    items = select(load_questions(SQUAD / "qa.jsonl"), titles=titles, sample_size=count, seed=seed)
    return [q for q in items if not q.unanswerable][:count]


def read_seconds(gen, tokens: int = 1000, runs: int = 3) -> float:
    """Seconds the model takes to read `tokens` tokens of prose from an empty context (the median
    of `runs`)."""
    text = (SQUAD / "corpus.jsonl").read_text(encoding="utf-8")[:20000]
    ids = gen._tokenize(text, bos=True)[:tokens]
    times = []
    for _ in range(runs):
        with gen._engine.use():
            started = time.perf_counter()
            gen._engine.read(ids)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def contained(text: str, answers: list[str]) -> bool:
    low = text.lower()
    return any(a.lower() in low for a in answers)


def save_states(rag, items) -> dict:
    """The passage states the questions' prompts need, saved now (what the background reader
    does for the whole folder): seconds, passages, tokens and bytes per token."""
    from rag.passage_states import covering

    gen = rag.generator()
    planner = rag.planner
    chunks = rag.handle.chunks()
    needed = []
    for item in items:
        hits = rag.retrieve(item.question)
        needed += covering(chunks, hits, rag.settings.prompt_passages)
    needed = list({c.id: c for c in needed}.values())
    before = planner.passage_states.usage()
    started = time.perf_counter()
    read = planner.passage_states.save_now(gen, gen.fingerprint, needed)
    seconds = time.perf_counter() - started
    after = planner.passage_states.usage()
    tokens = sum(len(gen._tokenize(c.text, bos=False)) for c in needed)
    return {"passages_read": read, "seconds": round(seconds, 1), "states": after[0],
            "bytes_per_token": round((after[1] - before[1]) / max(1, tokens)) if read else None}


def run_context(rag, name: str, items, reference: float) -> dict:
    context, _, variant = name.partition("-")  # windowed-120: within 120 tokens; stitched-bare: no key sentences
    update: dict = {"prompt_context": context, "prompt_highlights": variant != "bare"}
    if variant.isdigit():  # windowed-120: excerpts within 120 tokens; stitched-40: key sentences within 40
        update["prompt_budget_tokens" if context == "windowed" else "prompt_key_tokens"] = int(variant)
    rag.settings = rag.settings.model_copy(update=update)
    rss_before = rss_mb()
    if context == "stitched":
        # The states these questions need are saved (save_states); a folder whose states are all
        # saved has no reader running in the background, so none is started here.
        rag.generator().start_passages()
    else:
        rag.warm_up()
    rows = []
    for item in items:
        answer = rag.ask(item.question)
        first = answer.timings.first_token or answer.timings.total
        rows.append({"id": item.id, "first_words_s": round(first, 2), "total_s": round(answer.timings.total, 2),
                     "contained": contained(answer.text, item.answers), "refused": answer.refused,
                     "gold_cited": bool({c.source for c in answer.citations} & set(item.sources)),
                     "decided_by": answer.decided_by, "text": answer.text[:160]})
        log(f"{name} {item.id}: {rows[-1]['first_words_s']} s, contained={rows[-1]['contained']}")
    firsts = [r["first_words_s"] for r in rows]
    n = len(rows)
    p50 = percentile(firsts, 50)
    return {
        "context": name, "questions": n,
        "first_words_p50_s": round(p50, 2), "first_words_max_s": round(max(firsts), 2),
        "ratio_p50": round(p50 / reference, 2), "ratio_max": round(max(firsts) / reference, 2),
        "total_p50_s": round(statistics.median(r["total_s"] for r in rows), 2),
        "contained": round(sum(r["contained"] for r in rows) / n, 2),
        "refused": round(sum(r["refused"] for r in rows) / n, 2),
        "gold_cited": round(sum(r["gold_cited"] for r in rows) / n, 2),
        "rss_before_mb": round(rss_before), "rss_after_mb": round(rss_mb()),
        "answers": rows,
    }


def fresh_server(work: Path, question: str) -> dict:
    """`rag serve` started on the folder (index and states saved): seconds from the address it
    prints to the first words and the whole answer of one question through its OpenAI-compatible
    endpoint."""
    import openai

    from benchmarks.common import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_SEEDS_DIR=str(work / "seeds"), RAG_INDEX_DIR=str(work / "index"), RAG_GENERATOR="llamacpp",
               RAG_WATCH="false", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log_path = work / "serve.log"
    rag_bin = Path(sys.executable).with_name("rag")
    with log_path.open("wb") as out:
        process = subprocess.Popen([str(rag_bin), "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=work,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        address = f"127.0.0.1:{port}"
        while address not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"`rag serve` did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        printed = time.monotonic()
        client = openai.OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0, timeout=300)
        first, text = None, []
        while True:  # the page is up a moment after the address is printed
            try:
                stream = client.chat.completions.create(model="rag", stream=True,
                                                        messages=[{"role": "user", "content": question}])
                break
            except openai.APIConnectionError:
                time.sleep(0.05)
        for chunk in stream:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                first = first or time.monotonic()
                text.append(piece)
        done = time.monotonic()
        return {"address_printed_s": round(printed - started, 1), "first_words_s": round((first or done) - printed, 1),
                "answer_s": round(done - printed, 1), "text": "".join(text)[:200]}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--contexts", default=",".join(CONTEXTS))
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--titles", choices=("tune", "report"), default="report",
                        help="which half of SQuAD's titles to ask about (choose settings on tune, report on report)")
    parser.add_argument("--fresh", action="store_true", help="also a fresh `rag serve`'s first answer")
    parser.add_argument("--work", type=Path, default=None, help="folder for the corpus and index (default: the cache)")
    args = parser.parse_args(argv)

    from rag.evaluation.corpus import cache_root
    from rag.pipeline import Rag

    work = args.work or cache_root() / "bench-folder-squad2"
    settings = folder_settings(work)
    rag = Rag(settings)
    rag.index(progress=True)
    items = questions(args.questions, args.seed, args.titles)
    gen = rag.generator()
    rag.warm_up()
    reference = read_seconds(gen)
    log(f"1,000-token read: {reference:.2f} s")
    names = [c for c in args.contexts.split(",") if c]
    states = save_states(rag, items) if any(c.startswith("stitched") for c in names) else None
    results = [run_context(rag, c, items, reference) for c in names]
    read_after = read_seconds(gen)  # the yardstick again at the end: how much the machine drifted
    count, size = rag.planner.passage_states.usage()
    chunk_count = rag.handle.chunk_count
    fresh = None
    if args.fresh:
        rag.close()
        fresh = fresh_server(work, items[0].question)
    report = {"fresh_server": fresh, "machine": machine(), "chunks": chunk_count, "read_1000_tokens_s": round(reference, 2),
              "read_1000_tokens_after_s": round(read_after, 2),
              "passage_states": {**(states or {}), "on_disk": count, "disk_mb": round(size / 2**20)},
              "results": results}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"1,000-token read: {reference:.2f} s; {report['chunks']} chunks; fresh server: {fresh}")
    print("| context | first words p50 | max | ratio p50 / max | total p50 | contained | refused | gold cited |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['context']} | {r['first_words_p50_s']} s | {r['first_words_max_s']} s | "
              f"{r['ratio_p50']} / {r['ratio_max']} | {r['total_p50_s']} s | {r['contained']} | {r['refused']} | "
              f"{r['gold_cited']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
