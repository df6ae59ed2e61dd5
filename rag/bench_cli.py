"""`rag bench`: run one of the benchmarks behind docs/BENCHMARKS.md, with that benchmark's own options."""

from __future__ import annotations

import importlib
import os
import sys

import typer

# name -> (module of the `benchmarks` package, what it measures). A module is imported only when
# its benchmark runs: `rag` itself starts without torch or numpy.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "index": ("bench_index", "Indexing throughput: a full build and one-file-changed rebuilds."),
    "beir-reference": ("bench_beir_reference", "SciFact in the published configuration (whole documents)."),
    "peers": ("bench_peers", "Speed and memory against a LlamaIndex pipeline on SciFact."),
    "embedding-roofline": ("bench_embedding_roofline", "Embedding chunks/s against this machine's matmul limit."),
    "query": ("bench_query", "Query latency: retrieval per mode, first token and total per backend."),
    "first-token": ("bench_first_token", "Time to first token of the local model per prompt context."),
    "folder": ("bench_folder", "A folder 14x the model's context: first words and answers per prompt context."),
    "folder-upload": ("bench_folder_upload", "One document added through the page to that folder: how soon it answers."),
    "first-question": ("bench_first_question", "The first question in the browser after a new index: what shows when."),
    "prompt-quality": ("bench_prompt_quality", "Answer quality of the local model per prompt context."),
    "reading": ("bench_reading", "How fast the local model reads a prompt, by llama.cpp setting."),
    "refusal-probability": ("bench_refusal_probability", "The local model's first-token refusal probability."),
    "idle": ("bench_idle", "CPU used by an idle `rag serve`, with and without the idle queue."),
    "load": ("bench_load", "Load test of the chat server: concurrent chat users against `rag serve`."),
    "batch-split": ("bench_batch_split", "Where an answer's time goes on the local model, and what a batch can save."),
    "load-openai": ("bench_load_openai", "Load test of the OpenAI endpoint of `rag serve`, RAG_LLM_PARALLEL values side by side."),
    "multihop": ("bench_multihop", "Multi-hop retrieval on HotpotQA: one hop against two."),
    "scale": ("bench_scale", "Vector search at scale: FAISS flat, HNSW, IVF and pgvector HNSW."),
    "answerability": ("bench_answerability", "The answerability decision on SQuAD 2.0's held-out half."),
    "tune-answerability": ("tune_answerability", "Fit the answerability score and its threshold (tune data)."),
    "tune-reading": ("tune_reading", "Fit how the model's reading joins the answerability score."),
}

bench_app = typer.Typer(no_args_is_help=True, help="Run a benchmark; `rag bench NAME --help` lists its options.")

# Taken when `rag` starts, before the CLI sets its library defaults (rag.cli.quiet_libraries, e.g.
# TOKENIZERS_PARALLELISM=false): a benchmark runs without them, as `python -m benchmarks.x` runs, so
# the way it is started cannot change its figures.
_STARTED_WITH = frozenset(os.environ)


def run_benchmark(name: str, args: list[str]) -> int:
    """Run the benchmark called `name` with these command-line options; its exit status."""
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[name][0]}")
    saved_argv, saved_env = sys.argv, dict(os.environ)
    for key in set(os.environ) - _STARTED_WITH:
        del os.environ[key]
    sys.argv = [f"rag bench {name}", *args]  # argparse names the command in usage lines after argv[0]
    try:
        return module.main(args) or 0
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)


def _add(name: str, summary: str) -> None:
    # No help option of our own: --help, like every other option, goes to the benchmark's parser.
    @bench_app.command(name, help=summary, add_help_option=False,
                       context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def command(ctx: typer.Context) -> None:
        code = run_benchmark(name, list(ctx.args))
        if code:
            raise typer.Exit(code)


for _name, (_module, _summary) in BENCHMARKS.items():
    _add(_name, _summary)
