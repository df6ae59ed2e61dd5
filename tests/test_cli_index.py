"""`rag index` and `rag status` as a user runs them: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rag import faiss_folder as store

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
REPORT_KEYS = {"added", "changed", "removed", "unchanged", "chunks", "embedded_chunks", "seconds"}


def _run(cmd: list[str], env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 1, no traceback, and an `error:` message (on stderr) naming what to fix."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout.strip() == ""
    assert proc.stderr.startswith("error:"), proc.stderr
    # Compared without whitespace: see test_errors_are_one_line for the line-wrapping bug.
    squashed = "".join(proc.stderr.split())
    for needle in needles:
        assert "".join(needle.split()) in squashed


def test_missing_seeds_dir_exits_cleanly(rag_cmd, cli_env, in_tmp: Path) -> None:
    missing = in_tmp / "no" / "such" / "documents-folder"
    cli_env["RAG_SEEDS_DIR"] = str(missing)
    proc = _run(rag_cmd, cli_env, in_tmp, "index")
    _assert_clean_error(proc, "RAG_SEEDS_DIR", str(missing))
    assert not (in_tmp / "index" / "CURRENT").exists()


def test_missing_seeds_dir_from_flag(rag_cmd, cli_env, in_tmp: Path) -> None:
    proc = _run(rag_cmd, cli_env, in_tmp, "index", "--seeds", "nowhere")
    _assert_clean_error(proc, "RAG_SEEDS_DIR", "nowhere")


def test_bad_overlap_exits_cleanly(rag_cmd, cli_env, in_tmp: Path) -> None:
    shutil.copytree(SEEDS_DIR, in_tmp / "seeds")
    cli_env.update(RAG_CHUNK_TOKENS="100", RAG_CHUNK_OVERLAP="100")
    proc = _run(rag_cmd, cli_env, in_tmp, "index")
    _assert_clean_error(proc, "RAG_CHUNK_OVERLAP", "RAG_CHUNK_TOKENS")


def test_errors_are_one_line(rag_cmd, cli_env, in_tmp: Path) -> None:
    cli_env["RAG_SEEDS_DIR"] = str(in_tmp / "a" / "documents" / "folder" / "that" / "does" / "not" / "exist")
    missing = _run(rag_cmd, cli_env, in_tmp, "index")
    shutil.copytree(SEEDS_DIR, in_tmp / "seeds")
    cli_env.update(RAG_SEEDS_DIR=str(in_tmp / "seeds"), RAG_CHUNK_TOKENS="100", RAG_CHUNK_OVERLAP="100")
    overlap = _run(rag_cmd, cli_env, in_tmp, "index")
    for proc in (missing, overlap):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"


def test_index_json_then_status(rag_cmd, cli_env, in_tmp: Path) -> None:
    shutil.copytree(SEEDS_DIR, in_tmp / "seeds")
    (in_tmp / "seeds" / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    proc = _run(rag_cmd, cli_env, in_tmp, "index", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert REPORT_KEYS <= set(report)
    files = sorted(p.name for p in SEEDS_DIR.iterdir())
    assert report["added"] == files
    assert report["changed"] == report["removed"] == report["unchanged"] == []
    loaded = store.load(in_tmp / "index")
    assert report["chunks"] == report["embedded_chunks"] == len(loaded.chunks) > 0
    assert isinstance(report["seconds"], (int, float)) and report["seconds"] >= 0
    assert "picture.png" in proc.stderr  # the skip is a warning on stderr, not on stdout

    again = json.loads(_run(rag_cmd, cli_env, in_tmp, "index", "--json").stdout)
    assert again["unchanged"] == files and again["embedded_chunks"] == 0
    assert again["chunks"] == report["chunks"]

    status = _run(rag_cmd, cli_env, in_tmp, "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["documents"] == len(files)
    assert data["chunks"] == report["chunks"]
    assert data["embedding_model"] == "hashing-256"


def test_index_text_report(rag_cmd, cli_env, in_tmp: Path) -> None:
    shutil.copytree(SEEDS_DIR, in_tmp / "seeds")
    proc = _run(rag_cmd, cli_env, in_tmp, "index")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(list(SEEDS_DIR.iterdir()))} added" in proc.stdout
    assert "embedded this run" in proc.stdout


def test_index_prints_no_library_debug_lines(rag_cmd, cli_env, in_tmp: Path) -> None:
    shutil.copytree(SEEDS_DIR, in_tmp / "seeds")
    proc = _run(rag_cmd, cli_env, in_tmp, "index", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" not in proc.stderr, proc.stderr
