"""Indexing with Ray (`rag index --engine ray`): the same index as the plain path, or a clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag import ingest_ray
from rag.config import DEFAULT_EMBEDDING_MODEL
from rag.errors import ConfigError
from rag.types import Chunk


def _chunk(rel: str, ordinal: int) -> Chunk:
    return Chunk(id=f"{rel}-{ordinal}", source=rel, ordinal=ordinal, text=f"text {ordinal}", start_char=0,
                 end_char=6, start_line=1, end_line=1, tokens=2)


def _rows(*rows: tuple[str, str, str, float]) -> dict[str, np.ndarray]:
    """A Ray Data batch as the embedding stage returns it: (file, chunk JSON or "", error, value)."""
    return {
        "rel": np.array([r[0] for r in rows], dtype=object),
        "hash": np.array([f"h-{r[0]}" for r in rows], dtype=object),
        "kind": np.array(["txt" for _ in rows], dtype=object),
        "chunk": np.array([r[1] for r in rows], dtype=object),
        "error": np.array([r[2] for r in rows], dtype=object),
        "vector": np.array([[r[3], 0.0] for r in rows], dtype=np.float32),
    }


def test_rows_are_grouped_back_into_files_across_batches() -> None:
    a0, a1, b0 = (_chunk("a.txt", 0).model_dump_json(), _chunk("a.txt", 1).model_dump_json(),
                  _chunk("b.txt", 0).model_dump_json())
    batches = [
        _rows(("a.txt", a0, "", 1.0)),
        _rows(("a.txt", a1, "", 2.0), ("empty.txt", "", "", 0.0), ("bad.txt", "", "bad.txt: binary", 0.0)),
        _rows(("b.txt", b0, "", 3.0)),
    ]
    files = list(ingest_ray._group_by_file(iter(batches)))  # noqa: SLF001
    assert [f.rel for f in files] == ["a.txt", "empty.txt", "bad.txt", "b.txt"]
    a, empty, bad, b = files
    assert [c.ordinal for c in a.chunks] == [0, 1] and a.vectors[:, 0].tolist() == [1.0, 2.0]
    assert empty.chunks == [] and empty.error is None
    assert bad.error == "bad.txt: binary" and bad.chunks == []
    assert b.chunks[0].source == "b.txt" and b.vectors[:, 0].tolist() == [3.0]


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[scale\]"'):
        ingest_ray.import_ray()


def _no_ray_env(cli_env: dict[str, str], folder: Path) -> dict[str, str]:
    """The CLI's environment with a `ray` package on the path that fails to import."""
    fake = folder / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    return {**cli_env, "PYTHONPATH": str(fake.parent)}


def test_cli_engine_ray_without_the_extra_says_what_to_install(rag_cmd, cli_env, seeds_copy, in_tmp) -> None:
    env = _no_ray_env(cli_env, in_tmp)
    proc = subprocess.run([*rag_cmd, "index", "--engine", "ray"], env=env, cwd=in_tmp, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error:") and 'pip install -e ".[scale]"' in proc.stderr
    assert not (in_tmp / "index" / "CURRENT").exists()


def test_cli_rejects_an_unknown_engine_and_a_stray_address(rag_cmd, cli_env, seeds_copy, in_tmp) -> None:
    unknown = subprocess.run([*rag_cmd, "index", "--engine", "spark"], env=cli_env, cwd=in_tmp,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error:") and "Traceback" not in unknown.stderr
    assert "spark" in unknown.stderr and "plain or ray" in unknown.stderr
    stray = subprocess.run([*rag_cmd, "index", "--address", "ray://head:10001"], env=cli_env, cwd=in_tmp,
                           capture_output=True, text=True, timeout=120)
    assert stray.returncode == 1 and "--engine ray" in stray.stderr
    assert not (in_tmp / "index" / "CURRENT").exists()


@pytest.fixture
def short_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache folder with a short path: Ray's socket paths must stay under 108 characters."""
    folder = Path(tempfile.mkdtemp(prefix="rag-ray-"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _store_contents(settings) -> tuple[dict, list[str], list[Chunk], np.ndarray]:
    from rag.vectorstore import open_store

    store = open_store(settings)
    manifest = store.manifest()
    ids = [cid for entry in manifest.documents.values() for cid in entry.chunk_ids]
    return manifest.documents, ids, store.chunks(ids), store.vectors(ids)


def _ray_processes(folder: Path) -> list[int]:
    """PIDs of processes whose command line names the Ray session folder under `folder`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_ray_ingest_matches_the_plain_path(make_settings, seeds_copy: Path, real_embedder, short_cache) -> None:
    pytest.importorskip("ray.data", reason='the scale extra is not installed: pip install -e ".[scale]"')
    from rag.indexer import build_index

    (seeds_copy / "notes").mkdir()
    (seeds_copy / "notes" / "later.md").write_text("# Later\n\nA note written later, in a sub-folder.\n")
    (seeds_copy / "empty.txt").write_text("")
    (seeds_copy / "binary.txt").write_bytes(b"\x00\x01" * 64)
    plain = make_settings(embedding_model=DEFAULT_EMBEDDING_MODEL, index_dir=seeds_copy.parent / "plain")
    on_ray = make_settings(embedding_model=DEFAULT_EMBEDDING_MODEL, index_dir=seeds_copy.parent / "ray")
    warnings: list[str] = []

    expected = build_index(plain, embedder=real_embedder)
    report = ingest_ray.build_index_ray(on_ray, num_cpus=2, warn=warnings.append)

    assert report.wrote and report.embedded_chunks == expected.embedded_chunks > 20
    assert report.added == expected.added and "empty.txt" in report.added
    assert any("binary.txt" in s for s in report.skipped) and "empty.txt: no text to index" in warnings
    documents, ids, chunks, vectors = _store_contents(on_ray)
    want_documents, want_ids, want_chunks, want_vectors = _store_contents(plain)
    assert documents == want_documents  # same files, hashes, kinds and chunk ids in ordinal order
    assert ids == want_ids and chunks == want_chunks
    assert float(np.abs(vectors - want_vectors).max()) < 1e-5
    assert not _ray_processes(short_cache), "Ray left processes running"

    # Incremental: one file changed and one removed; only the changed file is embedded again.
    changed = sorted(p for p in seeds_copy.glob("*.txt") if p.name not in ("empty.txt", "binary.txt"))[0]
    changed.write_text(changed.read_text() + "\nOne more paragraph, so that this file changes.\n")
    (seeds_copy / "notes" / "later.md").unlink()
    expected = build_index(plain, embedder=real_embedder)
    report = ingest_ray.build_index_ray(on_ray, num_cpus=2)
    documents, ids, chunks, vectors = _store_contents(on_ray)
    want_documents, want_ids, want_chunks, want_vectors = _store_contents(plain)
    assert report.changed == [changed.name] and report.removed == ["notes/later.md"]
    assert report.embedded_chunks == expected.embedded_chunks == len(want_documents[changed.name].chunk_ids)
    assert documents == want_documents and ids == want_ids and chunks == want_chunks
    assert float(np.abs(vectors - want_vectors).max()) < 1e-5
    assert not _ray_processes(short_cache)
