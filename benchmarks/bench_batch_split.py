"""Where an answer's time goes on the local model, and how much a batch can save of it.

    rag bench batch-split            # markdown
    rag bench batch-split --json

One process, the machine to itself, the default local model (2 threads), the seeds indexed anew,
the corpus prompt (its state read once and saved, as a server does):

1. **An answer's split.** The seeds dev set's answerable questions asked one at a time through
   `Rag.ask`; for each, llama.cpp's own counters of the shared context (`llama_perf_context`:
   tokens read in prompt batches and their time, tokens written one at a time and theirs), and the
   rest of the wall time (retrieval, checks, Python).
2. **A batch's step.** A context laid out as the batch's (`rag.generation.batch_jobs.batch_context`:
   a key/value store per sequence) holding the corpus prompt in k sequences: the time of one step
   writing a token for each of k answers (k = 1, 2, 4, 8; median of 16 steps), and of reading a
   PREFILL_STEP slice of a prompt at that depth (median of 3); the same for k = 1 in the
   one-at-a-time context (what the batch's layout costs a lone answer).
3. **The bound.** With the medians of (1) and the steps of (2): the most answers a second a batch
   of k could serve against one at a time, if its reading stayed as it is (each answer reads its
   own part; reading a slice costs the same alone or in company) and its writing cost a k-step
   for k answers: (read + write + rest) / (read + rest + write x step_k / (k x step_1)).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_first_token import corpus_state
from benchmarks.common import DEV_SET, ROOT, load_questions, machine

WIDTHS = (1, 2, 4, 8)
STEPS = 16


def perf(ctx) -> tuple[int, float, int, float]:
    """llama.cpp's counters of `ctx`: tokens read in batches and seconds, tokens written and seconds."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(ctx)
    return data.n_p_eval, data.t_p_eval_ms / 1000, data.n_eval, data.t_eval_ms / 1000


def answer_split(rag, questions: list[dict]) -> list[dict]:
    import llama_cpp

    ctx = rag.generator()._llm._ctx.ctx
    rows = []
    for item in questions:
        llama_cpp.llama_perf_context_reset(ctx)
        started = time.perf_counter()
        answer = rag.ask(item["question"])
        wall = time.perf_counter() - started
        read, read_s, written, write_s = perf(ctx)
        rows.append({"id": item["id"], "wall_s": round(wall, 2), "read_tokens": read, "read_s": round(read_s, 2),
                     "written_tokens": written, "write_s": round(write_s, 2),
                     "rest_s": round(wall - read_s - write_s, 2), "refused": answer.refused})
    return rows


def batch_steps(llm, prompt: list[int], *, threads: int, n_ctx: int) -> dict:
    """Step times with the corpus prompt read: in the one-at-a-time context (`llm`'s, k = 1),
    and in the batch's layout with the prompt in every sequence."""
    import llama_cpp

    from rag.generation.batch_jobs import batch_context
    from rag.generation.llama_batch import PREFILL_STEP

    flag = ctypes.create_string_buffer(2)
    batched = batch_context(llm._model, sequences=max(WIDTHS), n_ctx=n_ctx, n_batch=512, threads=threads,
                            flash_attn=False, flag=flag)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(ctx, items: list[tuple[int, int, int]]) -> float:
        for n, (seq, pos, token) in enumerate(items):
            batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, pos, 1, True
            batch.seq_id[n][0] = seq
        batch.n_tokens = len(items)
        started = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise SystemExit("decode failed")
        return time.perf_counter() - started

    depth = len(prompt)
    layouts = {}
    for name, ctx, memory in (("one at a time", llm._ctx.ctx, llm._ctx.memory), ("batch", batched.ctx, batched.memory)):
        llama_cpp.llama_memory_clear(memory, True)
        for at in range(0, depth, 512):
            decode(ctx, [(0, at + i, t) for i, t in enumerate(prompt[at:at + 512])])
        slices = []
        for _ in range(3):
            slices.append(decode(ctx, [(0, depth + i, prompt[i]) for i in range(PREFILL_STEP)]))
            llama_cpp.llama_memory_seq_rm(memory, 0, depth, -1)
        widths = WIDTHS if name == "batch" else (1,)
        for seq in range(1, max(widths)):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        steps = {}
        for k in widths:
            times = [decode(ctx, [(s, depth + j, prompt[j + s]) for s in range(k)]) for j in range(STEPS)]
            for s in range(k):
                llama_cpp.llama_memory_seq_rm(memory, s, depth, -1)
            steps[k] = statistics.median(times)
        layouts[name] = {"reading_tokens_per_s": round(PREFILL_STEP / statistics.median(slices), 1),
                         "steps": {k: {"step_ms": round(t * 1000, 1), "written_per_s": round(k / t, 1),
                                       "cost_vs_one": round(t / steps[1], 2)} for k, t in steps.items()}}
        llama_cpp.llama_memory_clear(memory, True)
    llm.reset()
    llama_cpp.llama_batch_free(batch)
    batched.close()
    return {"depth_tokens": depth, **layouts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--questions", type=int, default=11)
    args = parser.parse_args(argv)

    from rag.config import load_settings
    from rag.corpus_cache import corpus_system
    from rag.cpus import usable_cpus
    from rag.pipeline import Rag

    work = Path(tempfile.mkdtemp(prefix="rag-split-"))
    shutil.copytree(ROOT / "seeds", work / "seeds")
    os.environ.update({"RAG_SEEDS_DIR": str(work / "seeds"), "RAG_INDEX_DIR": str(work / "index"),
                       "RAG_GENERATOR": "llamacpp", "RAG_PROMPT_CONTEXT": "corpus", "RAG_LLM_PARALLEL": "1"})
    rag = Rag(load_settings())
    rag.index()
    corpus_state(rag)
    rag.warm_up()
    questions = [r for r in load_questions(DEV_SET) if r.get("sources")][: args.questions]
    rows = answer_split(rag, questions)
    gen = rag.generator()
    prompt = gen._prefix_tokens(corpus_system(rag.handle.chunks()))
    with gen._engine.use() as llm:
        measured = batch_steps(llm, prompt, threads=gen._options["threads"] or usable_cpus(),
                               n_ctx=rag.settings.llm_context_tokens)
    steps = measured["batch"]
    median = {k: statistics.median(r[k] for r in rows)
              for k in ("wall_s", "read_tokens", "read_s", "written_tokens", "write_s", "rest_s")}
    bound = {k: round((median["read_s"] + median["write_s"] + median["rest_s"])
                      / (median["read_s"] + median["rest_s"] + median["write_s"] * s["cost_vs_one"] / k), 2)
             for k, s in steps["steps"].items()}
    report = {"machine": machine(), "answers": rows, "median": median, "steps": measured, "bound_vs_one": bound}
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"An answer, one at a time (median of {len(rows)}): {median['wall_s']:.2f} s = reading "
          f"{median['read_tokens']:.0f} tokens {median['read_s']:.2f} s + writing {median['written_tokens']:.0f} "
          f"tokens {median['write_s']:.2f} s + rest {median['rest_s']:.2f} s")
    one = measured["one at a time"]
    print(f"At the corpus's depth ({len(prompt)} tokens), reading a slice: {one['reading_tokens_per_s']} tokens/s "
          f"one at a time, {steps['reading_tokens_per_s']} in the batch's layout; writing one token: "
          f"{one['steps'][1]['step_ms']} ms one at a time\n")
    print("| answers written together (k) | step | tokens written a second | cost vs one "
          "| bound on answers/s vs one at a time |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for k, s in steps["steps"].items():
        print(f"| {k} | {s['step_ms']} ms | {s['written_per_s']} | {s['cost_vs_one']}x | {bound[k]}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
