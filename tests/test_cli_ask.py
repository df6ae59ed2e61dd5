"""`rag ask`: JSON output, `file:start-end` source lines, errors as one line and exit code 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rag import cli
from rag.errors import GeneratorError
from rag.prompting import REFUSAL
from rag.types import Answer

from fakes import CORPUS, line_of, scripted, write_corpus  # noqa: F401

DANUBE = "Which cities stand on the Danube?"
VIENNA_LINE = line_of(CORPUS["notes/rivers.txt"], "Vienna")
SMALL_CHUNKS = {"RAG_CHUNK_TOKENS": "24", "RAG_CHUNK_OVERLAP": "0"}


@pytest.fixture
def cli_seeds(in_tmp, monkeypatch):
    """The corpus under tmp_path; the in-process CLI configured through RAG_* variables."""
    write_corpus(in_tmp / "seeds")
    env = {
        "RAG_SEEDS_DIR": str(in_tmp / "seeds"),
        "RAG_INDEX_DIR": str(in_tmp / "index"),
        "RAG_EMBEDDING_MODEL": "hashing-256",
        "RAG_GENERATOR": "extractive",
        **SMALL_CHUNKS,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return in_tmp


def run(*args: str):
    return CliRunner().invoke(cli.app, list(args), catch_exceptions=False)


def test_ask_json_in_a_subprocess_prints_the_answer(cli_env, rag_cmd, in_tmp):
    write_corpus(in_tmp / "seeds")
    env = cli_env | SMALL_CHUNKS | {"RAG_GENERATOR": "extractive"}
    proc = subprocess.run(
        [*rag_cmd, "ask", "--json", DANUBE], env=env, cwd=in_tmp, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    answer = Answer.model_validate(json.loads(proc.stdout))
    assert answer.question == DANUBE
    assert answer.generator == "extractive"
    [c] = answer.citations
    assert (c.marker, c.source, c.start_line, c.end_line, c.verified) == (1, "notes/rivers.txt", VIENNA_LINE, VIENNA_LINE, True)
    assert c.quote in CORPUS["notes/rivers.txt"].split("\n")[c.start_line - 1]
    assert answer.passages and answer.timings.total > 0


def test_ask_prints_the_answer_then_file_and_line_sources(cli_seeds):
    result = run("ask", DANUBE)
    assert result.exit_code == 0, result.output
    answer_line, *rest = result.stdout.strip().split("\n")
    assert answer_line == "Vienna and Budapest both stand on the Danube. [1]"
    assert "Sources:" in rest
    sources = [line.strip() for line in rest if re.match(r"\s*\[\d+\] ", line)]
    assert sources == [f"[1] notes/rivers.txt:{VIENNA_LINE}-{VIENNA_LINE}"]
    assert "extractive, hybrid" in result.stderr


def test_ask_lists_every_cited_source(cli_seeds, scripted):
    scripted.enqueue("Vienna and Budapest [1]. It ends in the Black Sea [2]. Katla [9].")
    result = run("ask", "--generator", "scripted", "--top-k", "2", DANUBE)
    assert result.exit_code == 0, result.output
    sources = re.findall(r"\[(\d+)\] (\S+):(\d+)-(\d+)", result.stdout)
    flows = line_of(CORPUS["notes/rivers.txt"], "The Danube flows")
    assert sources == [
        ("1", "notes/rivers.txt", str(VIENNA_LINE), str(VIENNA_LINE)),
        ("2", "notes/rivers.txt", str(flows), str(flows)),
    ]
    # The out-of-range [9] gets no source line, and (printed to a file, not a terminal) the answer
    # is the checked one, without it.
    assert not re.search(r"\[9\] \S+:", result.stdout) and "[9]" not in result.stdout
    assert "scripted, hybrid" in result.stderr


def test_ask_json_with_options(cli_seeds, scripted):
    scripted.enqueue("Vienna and Budapest [1].")
    result = run("ask", "--json", "-g", "scripted", "-k", "1", "-m", "bm25", DANUBE)
    assert result.exit_code == 0, result.output
    answer = Answer.model_validate_json(result.stdout)
    assert (answer.generator, answer.mode, len(answer.passages)) == ("scripted", "bm25", 1)
    assert scripted.requests[0].passages == answer.passages


def test_refusal_prints_no_sources(cli_seeds, scripted):
    result = run("ask", "-g", "scripted", "Quantum chromodynamics gluon confinement?")
    assert result.exit_code == 0
    assert result.stdout.strip() == REFUSAL
    assert scripted.calls == 0


def test_fallback_is_noted_on_stderr(cli_seeds, scripted):
    scripted.enqueue(GeneratorError("the model crashed"))
    result = run("ask", "-g", "scripted", DANUBE)
    assert result.exit_code == 0
    assert "note:" in result.stderr and "the model crashed" in result.stderr
    assert f"notes/rivers.txt:{VIENNA_LINE}-{VIENNA_LINE}" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "   "], "the question is empty"),
        (["ask", "x" * 3000], "the limit is 2,000"),
        (["ask", "-g", "nope", DANUBE], "unknown generator 'nope'"),
        (["ask", "-m", "fuzzy", DANUBE], "unknown mode 'fuzzy'"),
    ],
)
def test_errors_are_one_line_and_exit_1(cli_seeds, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(sys, "argv", ["rag", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error:" in captured.err and message in " ".join(captured.err.split())
    assert "Traceback" not in captured.err


def test_a_usage_error_is_one_message_and_exit_code_2(rag_cmd, cli_env):
    import subprocess

    out = subprocess.run([*rag_cmd, "index", "--bogus"], env=cli_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "No such option: --bogus" in out.stderr and "Traceback" not in out.stderr + out.stdout
