"""The index on disk: round trip, checksums, compatibility checks, atomic swaps, killed builds."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from rag import faiss_folder
from rag.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from rag.indexer import build_index
from rag.vectorstore import check_manifest


def _write_corpus(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel in {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - set(files):
        (folder / rel).unlink()
    for rel, text in files.items():
        path = folder / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


def _small_corpus() -> dict[str, str]:
    return {
        "a.txt": "Apples are red and grow on trees. They are picked in autumn.",
        "b.md": "# Bananas\n\nBananas are yellow. Monkeys like them a lot.",
        "sub/c.txt": "Cherries are small and dark. Birds eat them in summer.",
    }


def _contents(loaded: faiss_folder.LoadedIndex) -> tuple[dict[str, str], int, list[str]]:
    docs = {rel: e.content_hash for rel, e in loaded.manifest.documents.items()}
    return docs, len(loaded.chunks), sorted(c.id for c in loaded.chunks)


def test_round_trip(make_settings, hashing_embedder) -> None:
    settings = make_settings()
    _write_corpus(settings.seeds_dir, _small_corpus())
    report = build_index(settings, embedder=hashing_embedder)
    loaded = faiss_folder.load(settings.index_dir)
    m = loaded.manifest
    assert m.schema_version == faiss_folder.SCHEMA_VERSION
    assert (m.embedding_model, m.dimension) == ("hashing-256", 256)
    assert (m.chunk_tokens, m.chunk_overlap) == (settings.chunk_tokens, settings.chunk_overlap)
    assert m.tokenizer == "cl100k_base"
    assert set(m.documents) == {"a.txt", "b.md", "sub/c.txt"}
    assert m.chunk_count == len(loaded.chunks) == report.chunks
    assert set(m.files) >= {faiss_folder.VECTORS, faiss_folder.CHUNKS}
    assert "faiss-cpu" in m.library_versions
    vectors = loaded.vectors()
    assert vectors.shape == (len(loaded.chunks), 256)
    expected = hashing_embedder.embed([c.text for c in loaded.chunks])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert [c.id for c in loaded.chunks] == [cid for e in m.documents.values() for cid in e.chunk_ids]
    assert loaded.bm25 is not None


def test_no_index_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="rag index"):
        faiss_folder.load(tmp_path / "index")
    assert faiss_folder.read_manifest(tmp_path / "index") is None


def _built(make_settings, hashing_embedder):
    settings = make_settings()
    _write_corpus(settings.seeds_dir, _small_corpus())
    build_index(settings, embedder=hashing_embedder)
    name = faiss_folder.current_build_name(settings.index_dir)
    assert name is not None
    return settings, faiss_folder.build_folder(settings.index_dir, name)


def test_truncated_vectors_is_corrupt(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    vectors = folder / faiss_folder.VECTORS
    with vectors.open("r+b") as fh:
        fh.truncate(vectors.stat().st_size // 2)
    with pytest.raises(IndexCorruptError) as info:
        faiss_folder.load(settings.index_dir)
    assert "rag index --force" in str(info.value)
    # Even without the checksum pass the damage is reported, not raised as a faiss error.
    with pytest.raises(IndexCorruptError, match="rag index --force"):
        faiss_folder.load(settings.index_dir, verify=False)


def test_damaged_files_are_corrupt(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    chunks = folder / faiss_folder.CHUNKS
    chunks.write_text(chunks.read_text(encoding="utf-8").replace("Apples", "Oranges"), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="rag index --force"):
        faiss_folder.load(settings.index_dir)

    (folder / faiss_folder.MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="rag index --force"):
        faiss_folder.load(settings.index_dir)

    shutil.rmtree(folder)
    with pytest.raises(IndexCorruptError, match="rag index --force"):
        faiss_folder.load(settings.index_dir)


def test_force_rebuild_repairs_corruption(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    (folder / faiss_folder.VECTORS).write_bytes(b"")
    report = build_index(settings, embedder=hashing_embedder, force=True)
    assert report.wrote and report.full_rebuild_reason == "--force was given"
    assert len(faiss_folder.load(settings.index_dir).chunks) == report.chunks > 0


def test_check_compatible_says_what_to_do(make_settings, hashing_embedder) -> None:
    settings, _ = _built(make_settings, hashing_embedder)
    manifest = faiss_folder.read_manifest(settings.index_dir)
    assert manifest is not None
    check_manifest(manifest, embedding_model="hashing-256", chunk_tokens=180, chunk_overlap=30)

    with pytest.raises(IndexMismatchError) as info:
        check_manifest(manifest, embedding_model="hashing-128", chunk_tokens=180, chunk_overlap=30)
    message = str(info.value)
    assert "hashing-256" in message and "hashing-128" in message
    assert "RAG_EMBEDDING_MODEL" in message and "rag index" in message

    with pytest.raises(IndexMismatchError) as info:
        check_manifest(manifest, embedding_model="hashing-256", chunk_tokens=120, chunk_overlap=20)
    message = str(info.value)
    assert "RAG_CHUNK_TOKENS=180" in message and "120" in message and "rag index" in message


def test_other_schema_version_is_mismatch(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    path = folder / faiss_folder.MANIFEST
    data = json.loads(path.read_text(encoding="utf-8"))
    data["schema_version"] = faiss_folder.SCHEMA_VERSION + 1
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match="rag index --force"):
        faiss_folder.load(settings.index_dir)


def test_old_builds_collected(make_settings, hashing_embedder) -> None:
    settings = make_settings()
    corpus = _small_corpus()
    for i in range(4):
        corpus["a.txt"] += f" Extra sentence {i}."
        _write_corpus(settings.seeds_dir, corpus)
        build_index(settings, embedder=hashing_embedder)
    builds = settings.index_dir / faiss_folder.BUILDS
    stale_tmp = builds / ".tmp-20000101T000000000000-deadbeef"
    stale_tmp.mkdir()
    (stale_tmp / "vectors.faiss").write_bytes(b"half written")
    corpus["a.txt"] += " Last one."
    _write_corpus(settings.seeds_dir, corpus)
    build_index(settings, embedder=hashing_embedder)
    names = sorted(p.name for p in builds.iterdir())
    assert len(names) == faiss_folder.KEEP_BUILDS
    assert faiss_folder.current_build_name(settings.index_dir) == names[-1]
    assert not list(settings.index_dir.glob(".CURRENT.*"))


def test_collect_garbage_keeps_the_build_in_use_and_the_newest(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    builds = settings.index_dir / faiss_folder.BUILDS
    made = [builds / f"2000010{i}T000000000000-0000000{i}" for i in range(3)]
    made += [builds / "29991231T000000000000-ffffffff", builds / f"{faiss_folder.TMP_PREFIX}29991231T000000000000-eeeeeeee"]
    for path in made:
        path.mkdir()
    faiss_folder.collect_garbage(settings.index_dir)
    assert sorted(p.name for p in builds.iterdir()) == sorted([folder.name, "29991231T000000000000-ffffffff"])
    assert len(list(builds.iterdir())) == faiss_folder.KEEP_BUILDS


def test_a_build_with_nothing_to_do_sweeps_half_written_builds(make_settings, hashing_embedder) -> None:
    settings, folder = _built(make_settings, hashing_embedder)
    half = faiss_folder.build_folder(settings.index_dir, f"{faiss_folder.TMP_PREFIX}{faiss_folder.new_build_name()}")
    half.mkdir()
    assert build_index(settings, embedder=hashing_embedder).wrote is False
    assert not half.exists() and folder.exists()


def test_load_during_swap_reads_one_build(make_settings, hashing_embedder, monkeypatch) -> None:
    """A reader racing a build gets one whole build, never a manifest of one and files of another."""
    from rag.types import Manifest

    settings = make_settings()
    corpus = _small_corpus()
    _write_corpus(settings.seeds_dir, corpus)
    build_index(settings, embedder=hashing_embedder)
    before = _contents(faiss_folder.load(settings.index_dir))

    real_parse = Manifest.model_validate_json
    fired = []

    def parse_then_rebuild(data, *args, **kwargs):
        manifest = real_parse(data, *args, **kwargs)
        if not fired:  # once: the rebuild below parses manifests too
            fired.append(True)
            corpus["a.txt"] = "Avocados are green. They are not apples."
            _write_corpus(settings.seeds_dir, corpus)
            build_index(settings, embedder=hashing_embedder)  # CURRENT moves on under the reader
        return manifest

    monkeypatch.setattr(Manifest, "model_validate_json", parse_then_rebuild)
    loaded = faiss_folder.load(settings.index_dir)
    assert fired
    assert _contents(loaded) == before
    monkeypatch.undo()
    after = faiss_folder.load(settings.index_dir)
    assert after.manifest.documents["a.txt"].content_hash != before[0]["a.txt"]


# -- a build killed at any moment leaves the old or the new index ----------------------------------

def _versioned_corpus(version: int) -> dict[str, str]:
    rnd = random.Random(42)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone".split()
    files = {}
    for i in range(80):
        sentences = [
            " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 14))).capitalize() + "."
            for _ in range(30)
        ]
        files[f"part{i // 20}/doc{i:03d}.txt"] = " ".join(sentences)
    if version == 1:
        for i in range(0, 80, 6):
            files[f"part{i // 20}/doc{i:03d}.txt"] += " A sentence added in version one."
        for i in range(1, 80, 12):
            del files[f"part{i // 20}/doc{i:03d}.txt"]
        for i in range(10):
            files[f"new/added{i}.txt"] = f"Brand new document {i}. " * 30
    return files


def _expected(make_settings, hashing_embedder, tmp_path: Path, version: int):
    settings = make_settings(seeds_dir=tmp_path / f"ref{version}/seeds", index_dir=tmp_path / f"ref{version}/index")
    _write_corpus(settings.seeds_dir, _versioned_corpus(version))
    build_index(settings, embedder=hashing_embedder)
    return _contents(faiss_folder.load(settings.index_dir))


def test_killed_builds_leave_old_or_new_index(
    make_settings, hashing_embedder, rag_cmd, cli_env, tmp_path: Path
) -> None:
    expected = [_expected(make_settings, hashing_embedder, tmp_path, v) for v in (0, 1)]
    assert expected[0] != expected[1]
    seeds, index = Path(cli_env["RAG_SEEDS_DIR"]), Path(cli_env["RAG_INDEX_DIR"])

    def run(version: int, kill_after: float | None = None, kill_on_tmp: bool = False) -> bool:
        _write_corpus(seeds, _versioned_corpus(version))
        started = time.perf_counter()
        log = tmp_path / "stderr.txt"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [*rag_cmd, "index", "--json"], env=cli_env, cwd=tmp_path,
                stdout=subprocess.DEVNULL, stderr=err,
            )
        killed = False
        while proc.poll() is None:
            elapsed = time.perf_counter() - started
            writing = kill_on_tmp and (index / faiss_folder.BUILDS).is_dir() and any(
                p.name.startswith(".tmp-") for p in (index / faiss_folder.BUILDS).iterdir()
            )
            if (kill_after is not None and elapsed >= kill_after) or writing:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        proc.wait(timeout=60)
        if not killed:
            assert proc.returncode == 0, log.read_text(errors="replace")
        return killed

    # The first build, uninterrupted, times a run so kills can be spread across it.
    started = time.perf_counter()
    assert not run(0)
    duration = time.perf_counter() - started
    state = _contents(faiss_folder.load(index))
    assert state == expected[0]

    rnd = random.Random(1234)
    kills = 0
    for attempt in range(10):
        target = 1 - expected.index(state)
        if attempt % 2:
            killed = run(target, kill_on_tmp=True)  # in the middle of writing the new build
        else:
            killed = run(target, kill_after=rnd.uniform(0.2, 1.0) * duration)
        kills += killed
        loaded = faiss_folder.load(index)  # never raises
        now = _contents(loaded)
        assert now in (state, expected[target]), f"attempt {attempt}: index is neither old nor new"
        if not killed:
            assert now == expected[target]
        assert loaded.faiss_index.ntotal == now[1]
        state = now
    assert kills >= 5, f"only {kills} of 10 runs were killed; the corpus builds too fast to test"

    # After all that, a normal run finishes the job and leaves no half-written build behind.
    target = 1 - expected.index(state)
    assert not run(target)
    assert _contents(faiss_folder.load(index)) == expected[target]
    assert not [p for p in (index / faiss_folder.BUILDS).iterdir() if p.name.startswith(".tmp-")]
