"""How fast the local model reads a prompt on this machine, by llama.cpp setting and quantization.

    rag bench reading           # markdown table
    rag bench reading --json

Reads the same ~600-token prompt (seeds text) from an empty context, three times per setting,
and reports prompt tokens per second (median) and the time to read 300 tokens, for: threads
(1, the container's usable cores), n_batch/n_ubatch (128, 512), flash attention off/on, and the
default model as shipped (Q4_K_M) against a Q4_0 requantization of it (made once with
llama_model_quantize into ~/.cache/rag/models; Q4_0 has repacked AVX2 kernels here). Also one
generation speed figure (tokens/s writing) per quantization.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT


def q4_0_copy(source: Path) -> Path:
    """The default model requantized to Q4_0 (made once, reused)."""
    import llama_cpp

    target = source.with_name(source.stem.replace("q4_k_m", "q4_0") + ".gguf")
    if target == source:
        target = source.with_name(source.stem + "-q4_0.gguf")
    if not target.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        params.allow_requantize = True
        tmp = target.with_suffix(".tmp")
        if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
            raise SystemExit("quantization failed")
        tmp.replace(target)
    return target


def reading_speed(path: Path, tokens: list[int], *, threads: int, batch: int, flash: bool, repeats: int = 3) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                n_batch=batch, n_ubatch=batch, flash_attn=flash, verbose=False)
    seconds = []
    for _ in range(repeats):
        llm.reset()
        llm._ctx.kv_cache_clear()
        started = time.perf_counter()
        llm.eval(tokens)
        seconds.append(time.perf_counter() - started)
    rate = len(tokens) / statistics.median(seconds)
    llm.reset()
    started = time.perf_counter()
    written = 0
    for _ in llm.generate(tokens[:50], temp=0.0):
        written += 1
        if written == 32:
            break
    write_rate = written / (time.perf_counter() - started)
    del llm
    return {"prompt_tok_s": round(rate, 1), "read_300_s": round(300 / rate, 2), "write_tok_s": round(write_rate, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only the default settings per quantization")
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    from rag.cpus import usable_cpus
    from rag.models import default_llm_path

    source = default_llm_path()
    if source is None:
        raise SystemExit("the default model is not installed: run `make models`")
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "seeds").glob("*.txt")))
    vocab = Llama(model_path=str(source), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.encode(), add_bos=False)[:600]
    cores = usable_cpus()
    models = {"Q4_K_M": source, "Q4_0": q4_0_copy(source)}
    grid = [(cores, 512, False)] if args.quick else [
        (cores, 512, False), (cores, 512, True), (cores, 128, False), (1, 512, False)
    ]
    rows = []
    for quant, path in models.items():
        for threads, batch, flash in grid:
            rows.append({"quant": quant, "threads": threads, "n_batch": batch, "flash_attn": flash,
                         **reading_speed(path, tokens, threads=threads, batch=batch, flash=flash)})
    if args.json:
        print(json.dumps({"prompt_tokens": len(tokens), "cores": cores, "rows": rows}, indent=1))
        return 0
    print(f"{len(tokens)}-token prompt, {cores} usable cores\n")
    print("| quant | threads | n_batch | flash attn | prompt tok/s | 300 tokens | writing tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['quant']} | {r['threads']} | {r['n_batch']} | {'on' if r['flash_attn'] else 'off'} | "
              f"{r['prompt_tok_s']} | {r['read_300_s']} s | {r['write_tok_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
