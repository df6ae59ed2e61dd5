"""Index faults: builds killed with SIGKILL at random moments, damaged files, concurrent builds.

After any of them the index either loads and answers exactly as one complete build would (the
one before or the one after), or says it is damaged and how to rebuild it. Never a mix.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag import faiss_folder as store
from rag.config import Settings
from rag.embedding import HashingEmbedder
from rag.errors import IndexCorruptError
from rag.indexer import build_index
from rag.pipeline import Rag

KILL_ROUNDS = int(os.environ.get("RAG_TEST_KILL_ROUNDS", "24"))


def faults_settings(tmp_path: Path, index: str = "index", seeds: str = "seeds") -> Settings:
    return Settings(
        _env_file=None,
        seeds_dir=tmp_path / seeds,
        index_dir=tmp_path / index,
        embedding_model="hashing-256",
        chunk_tokens=48,
        chunk_overlap=0,  # no overlapping chunks, so retrieval never merges two of them
        generator="extractive",
    )


_VOCAB = [
    f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu")
    for b in ("bar", "cen", "dol", "fim", "gup", "hox", "jet", "kir", "lum", "nop")
]


def _doc(name: str, version: str, marker: str, lines: int = 9) -> str:
    """Text of varied words and line lengths, so retrieval scores do not tie between chunks
    (a tie would let the order of rows in a build decide, and builds may order rows differently)."""
    rnd = random.Random(f"{name}/{version}")
    out = []
    for _ in range(lines):
        words = [rnd.choice(_VOCAB) for _ in range(rnd.randint(5, 13))]
        words.insert(rnd.randrange(len(words)), marker)
        out.append(" ".join(words).capitalize() + ".\n")
    return "".join(out)


# Two states of one seeds folder: B changes one file, removes one, adds one, keeps the rest.
STATE_A = {f"keep{i:02d}.txt": _doc(f"keep{i}", "stable", f"keepmark{i}") for i in range(8)}
STATE_A |= {"changing.txt": _doc("changing", "old", "oldmark"), "leaving.txt": _doc("leaving", "old", "leavemark")}
STATE_B = {k: v for k, v in STATE_A.items() if k != "leaving.txt"}
STATE_B |= {"changing.txt": _doc("changing", "new", "newmark"), "arriving.txt": _doc("arriving", "new", "arrivemark")}
STATES = {"A": STATE_A, "B": STATE_B}
PROBES = [
    "oldmark kabar locen", "newmark midol nefim", "leavemark rugup", "arrivemark sahox tojet",
    "keepmark4 vikir", "zelum qunop kacen",
]


def put_state(seeds: Path, state: dict[str, str]) -> None:
    seeds.mkdir(parents=True, exist_ok=True)
    for path in seeds.iterdir():
        if path.name not in state:
            path.unlink()
    for rel, text in state.items():
        path = seeds / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def snapshot(settings: Settings) -> tuple:
    """What the index answers: its documents and, per probe and mode, the passages retrieved.

    store.load verifies every checksum first, so a damaged build fails here rather than passing.
    """
    loaded = store.load(settings.index_dir)
    docs = tuple(sorted((k, v.content_hash) for k, v in loaded.manifest.documents.items()))
    rag = Rag(settings, embedder=HashingEmbedder(256))
    answers = []
    for q in PROBES:
        for mode in ("dense", "bm25"):
            hits = rag.retrieve(q, mode=mode)
            scores = [round(h.score, 5) for h in hits]
            # The hashing embedder's scores tie often; which of two tied passages makes the cut
            # depends on row order, which differs between builds. Compare the scores, and the
            # passages that beat the last score, not the tie-break.
            answers.append(
                (tuple(sorted(scores)), frozenset((h.chunk.source, h.chunk.start_line, h.chunk.text)
                                                  for h in hits if round(h.score, 5) > min(scores)))
            )
    return docs, tuple(answers)


_WARM_FLAG = "FAULTS_INDEX_FORKSERVER"

if os.environ.get(_WARM_FLAG) == "1":
    # This module is being imported by the fork server below: load the tokenizer there once, so
    # the children it forks start building at once.
    from rag.chunking import get_encoding

    get_encoding()


@pytest.fixture(scope="module")
def forkserver():
    """Children forked from a server that has imported the index code but run none of it: starting
    one takes milliseconds, so kills land in the build and not in `import faiss`."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["rag.indexer", "rag.faiss_folder", "rag.lexical", "rag.chunking", "faiss", "bm25s", __name__]
    )
    # Read once, when the fork server starts. Python 3.11's fork server ignores the sys.path it is
    # handed, so this folder goes in through PYTHONPATH for it to import this module.
    saved = {k: os.environ.get(k) for k in (_WARM_FLAG, "PYTHONPATH")}
    os.environ[_WARM_FLAG] = "1"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parent), saved["PYTHONPATH"]) if p
    )
    yield ctx
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _child_build(settings: Settings) -> None:
    build_index(settings, embedder=HashingEmbedder(256), warn=lambda message: None)


def test_builds_killed_at_random_moments_leave_the_before_or_the_after_index(tmp_path, monkeypatch, forkserver):
    monkeypatch.chdir(tmp_path)
    # What each complete build answers, from builds in folders of their own.
    reference = {}
    for name, state in STATES.items():
        put_state(tmp_path / f"seeds-{name}", state)
        ref_settings = faults_settings(tmp_path, index=f"index-{name}", seeds=f"seeds-{name}")
        build_index(ref_settings, embedder=HashingEmbedder(256))
        reference[name] = snapshot(ref_settings)
    assert reference["A"] != reference["B"]

    settings = faults_settings(tmp_path)
    seeds = settings.seeds_dir
    put_state(seeds, STATE_A)
    build_index(settings, embedder=HashingEmbedder(256))
    assert snapshot(settings) == reference["A"]

    # How long an unhurried A -> B build takes in a child, so kill times can span all of it.
    warm = forkserver.Process(target=time.sleep, args=(0,))  # starts the fork server itself
    warm.start()
    warm.join(120)
    put_state(seeds, STATE_B)
    started = time.monotonic()
    child = forkserver.Process(target=_child_build, args=(settings,))
    child.start()
    child.join(120)
    full = time.monotonic() - started
    assert child.exitcode == 0
    assert snapshot(settings) == reference["B"]
    current = "B"

    rnd = random.Random(1234)
    outcomes = {"before": 0, "after": 0}
    for round_ in range(KILL_ROUNDS):
        target = "A" if current == "B" else "B"
        put_state(seeds, STATES[target])
        child = forkserver.Process(target=_child_build, args=(settings,))
        child.start()
        time.sleep(rnd.uniform(0.0, full * 1.1))
        child.kill()  # SIGKILL: no finally, no atexit, no flush
        child.join(30)
        got = snapshot(settings)  # raises if any file of the build in use is damaged
        if got == reference[current]:
            outcomes["before"] += 1
        elif got == reference[target]:
            outcomes["after"] += 1
            current = target
        else:
            pytest.fail(f"round {round_}: the index answers neither as state {current} nor as {target}")
    # Some kills must land before the swap and some after, or the test proved little.
    print(f"build {full:.2f}s, {KILL_ROUNDS} kills: {outcomes}")
    assert outcomes["before"] and outcomes["after"], outcomes

    # An unkilled build afterwards completes, clears what the killed ones left (even when it has
    # nothing else to do), and is exact.
    put_state(seeds, STATES[current])
    report = build_index(settings, embedder=HashingEmbedder(256))
    assert not report.wrote
    assert snapshot(settings) == reference[current]
    builds = list((settings.index_dir / store.BUILDS).iterdir())
    assert not [p for p in builds if p.name.startswith(".tmp-")]
    assert len(builds) <= store.KEEP_BUILDS
    assert not list(settings.index_dir.glob(".CURRENT.*"))


# -- damaged files -------------------------------------------------------------------------------------
@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    settings = faults_settings(tmp_path)
    put_state(settings.seeds_dir, STATE_A)
    build_index(settings, embedder=HashingEmbedder(256))
    return settings


def build_files(settings: Settings) -> list[Path]:
    folder = settings.index_dir / store.BUILDS / store.current_build_name(settings.index_dir)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _damage_ids() -> list[str]:
    return [store.VECTORS, store.CHUNKS, store.MANIFEST, store.BM25_DIR]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
@pytest.mark.parametrize("which", _damage_ids())
def test_a_damaged_index_file_is_detected_on_load_and_says_to_rebuild(built, which, damage):
    files = [p for p in build_files(built) if p.name == which or p.parent.name == which]
    assert files
    for path in files:
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "empty":
            path.write_bytes(b"")
        elif which == store.MANIFEST:
            # A flipped checksum digit: the manifest's own bytes carry no checksum, but what it
            # vouches for no longer matches.
            import json

            manifest = json.loads(data)
            first = sorted(manifest["files"])[0]
            manifest["files"][first] = "0" * 64
            path.write_text(json.dumps(manifest), encoding="utf-8")
        else:
            middle = len(data) // 2
            path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    with pytest.raises(IndexCorruptError, match=r"rag index --force") as info:
        store.load(built.index_dir)
    assert "\n" not in str(info.value)
    # A fresh process asking a question gets the same clear error, not a traceback.
    with pytest.raises(IndexCorruptError, match=r"rebuild"):
        Rag(built, embedder=HashingEmbedder(256)).ask("keepmark4 vikir")
    # And the advice works.
    build_index(built, embedder=HashingEmbedder(256), force=True)
    assert Rag(built, embedder=HashingEmbedder(256)).ask("keepmark4 vikir").citations


def test_a_damaged_index_is_rebuilt_by_the_next_incremental_build_that_has_work(built):
    chunks = [p for p in build_files(built) if p.name == store.CHUNKS][0]
    chunks.write_bytes(chunks.read_bytes()[:100])
    put_state(built.seeds_dir, STATE_B)
    warnings: list[str] = []
    report = build_index(built, embedder=HashingEmbedder(256), warn=warnings.append)
    assert report.full_rebuild_reason and "unreadable" in report.full_rebuild_reason
    assert any("rebuild" in w for w in warnings)
    store.load(built.index_dir)


def test_rag_ask_on_a_damaged_index_is_one_error_naming_the_fix(built, tmp_path):
    vectors = [p for p in build_files(built) if p.name == store.VECTORS][0]
    vectors.write_bytes(vectors.read_bytes()[:64])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_EMBEDDING_MODEL="hashing-256", RAG_SEEDS_DIR=str(built.seeds_dir),
               RAG_INDEX_DIR=str(built.index_dir), RAG_CHUNK_TOKENS="48", RAG_CHUNK_OVERLAP="0")
    script = Path(sys.executable).with_name("rag")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rag.cli"]
    proc = subprocess.run([*cmd, "ask", "keepmark4 vikir"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    flat = " ".join(proc.stderr.split())
    assert flat.startswith("error: index file") and "rag index --force" in flat


# -- concurrent builds ---------------------------------------------------------------------------------
def test_three_concurrent_rag_index_runs_all_succeed_and_leave_one_good_index(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = faults_settings(tmp_path)
    put_state(settings.seeds_dir, STATE_B)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_EMBEDDING_MODEL="hashing-256", RAG_SEEDS_DIR=str(settings.seeds_dir),
               RAG_INDEX_DIR=str(settings.index_dir), RAG_CHUNK_TOKENS="48", RAG_CHUNK_OVERLAP="0")
    script = Path(sys.executable).with_name("rag")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rag.cli"]
    procs = [
        subprocess.Popen([*cmd, "index", "--force", "--json"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    loaded = store.load(settings.index_dir)
    from rag.loaders import content_hash

    expected = {rel: content_hash(text.encode()) for rel, text in STATE_B.items()}
    assert {k: v.content_hash for k, v in loaded.manifest.documents.items()} == expected
    reference_settings = faults_settings(tmp_path, index="index-ref")
    build_index(reference_settings, embedder=HashingEmbedder(256))
    assert snapshot(settings) == snapshot(reference_settings)
    builds = list((settings.index_dir / store.BUILDS).iterdir())
    assert not [p for p in builds if p.name.startswith(".tmp-")]
