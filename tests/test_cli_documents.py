"""`rag add` and `rag remove`: one line per file, exit code 1 when something was refused, errors
as one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag import cli, faiss_folder as store

DANUBE = "The Danube flows through ten countries.\nVienna and Budapest stand on the Danube.\n"


@pytest.fixture
def cli_seeds(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty seeds folder and files to add under tmp_path; the CLI configured by RAG_* variables."""
    (in_tmp / "seeds").mkdir()
    incoming = in_tmp / "incoming"
    incoming.mkdir()
    (incoming / "rivers.txt").write_text(DANUBE, encoding="utf-8")
    (incoming / "hekla.md").write_text("# Hekla\n\nHekla erupted in 1947.\n", encoding="utf-8")
    (incoming / "photo [1].txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    monkeypatch.setenv("RAG_SEEDS_DIR", str(in_tmp / "seeds"))
    monkeypatch.setenv("RAG_INDEX_DIR", str(in_tmp / "index"))
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", "hashing-256")
    return in_tmp


def run(*args: str):
    return CliRunner().invoke(cli.app, list(args), catch_exceptions=False)


def main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `rag ARGS` through the real entry point: its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["rag", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
        sys.exit(0)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_add_prints_one_line_per_file_and_indexes(cli_seeds: Path) -> None:
    incoming = cli_seeds / "incoming"
    result = run("add", str(incoming / "rivers.txt"), str(incoming / "hekla.md"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"indexed  rivers\.txt \(1 chunk\)", lines[0]), lines
    assert re.fullmatch(r"indexed  hekla\.md \(\d+ chunks?\)", lines[1]), lines
    manifest = store.read_manifest(cli_seeds / "index")
    assert manifest is not None and set(manifest.documents) == {"rivers.txt", "hekla.md"}


def test_a_refused_file_is_one_line_and_exit_1(cli_seeds: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal must not wrap a result over lines
    incoming = cli_seeds / "incoming"
    code, out, err = main(monkeypatch, capsys, "add", str(incoming / "photo [1].txt"), str(incoming / "rivers.txt"))
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("refused  photo [1].txt: ") and "binary" in lines[0]  # brackets kept
    assert lines[1].startswith("indexed  rivers.txt")
    assert not (cli_seeds / "seeds" / "photo [1].txt").exists()
    assert err.strip() == "error: 1 of 2 files were not added; see the lines above"


def test_add_refuses_to_overwrite_unless_asked(cli_seeds: Path, monkeypatch, capsys) -> None:
    source = cli_seeds / "incoming" / "rivers.txt"
    assert main(monkeypatch, capsys, "add", str(source))[0] == 0
    source.write_text("Changed: the Danube reaches the Black Sea.\n", encoding="utf-8")
    code, out, _ = main(monkeypatch, capsys, "add", str(source))
    assert code == 1
    assert "already exists" in out and "--overwrite" in out
    assert (cli_seeds / "seeds" / "rivers.txt").read_text(encoding="utf-8") == DANUBE
    replaced = run("add", "--overwrite", str(source))
    assert replaced.exit_code == 0, replaced.stdout
    assert "Black Sea" in (cli_seeds / "seeds" / "rivers.txt").read_text(encoding="utf-8")


def test_remove_prints_what_it_removed(cli_seeds: Path) -> None:
    incoming = cli_seeds / "incoming"
    run("add", str(incoming / "rivers.txt"), str(incoming / "hekla.md"))
    result = run("remove", "rivers.txt")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "removed  rivers.txt"
    manifest = store.read_manifest(cli_seeds / "index")
    assert manifest is not None and set(manifest.documents) == {"hekla.md"}


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["remove", "../incoming/rivers.txt"], {}, "'../incoming/rivers.txt': give the document's name"),
        (["remove", "missing.txt"], {}, "no such document in the seeds folder"),
        (["add", "incoming/rivers.txt"], {"RAG_UPLOADS_ENABLED": "false"}, "RAG_UPLOADS_ENABLED=false"),
        (["remove", "rivers.txt"], {"RAG_UPLOADS_ENABLED": "false"}, "RAG_UPLOADS_ENABLED=false"),
        (["add", "incoming/rivers.txt"], {"RAG_UPLOAD_MAX_TOTAL_MB": "0.00001"}, "RAG_UPLOAD_MAX_TOTAL_MB"),
    ],
)
def test_errors_are_one_line_and_exit_1(cli_seeds, monkeypatch, capsys, argv, env, message) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["rag", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in captured.err
