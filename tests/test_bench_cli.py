"""`rag bench`: every benchmark is listed and gets its own options; the helpers the benchmarks share."""

from __future__ import annotations

import ast
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from benchmarks import common
from rag import bench_cli, cli
from rag.bench_cli import BENCHMARKS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str):
    return CliRunner().invoke(cli.app, ["bench", *args])


def _modules_with_main() -> list[str]:
    """The modules of benchmarks/ that define a top-level `main`, read from the source."""
    found = []
    for path in sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            found.append(path.stem)
    return found


def test_bench_help_lists_every_benchmark_module():
    result = _bench("--help")
    assert result.exit_code == 0
    by_module = {module: name for name, (module, _) in BENCHMARKS.items()}
    modules = _modules_with_main()
    assert len(modules) >= 17
    for module in modules:
        assert module in by_module, f"benchmarks/{module}.py has a main but no `rag bench` name"
        assert by_module[module] in result.output
    assert set(by_module) == set(modules)  # and no name points at a module that is gone


@pytest.mark.parametrize(
    ("name", "options"),
    [("query", ["--llm-questions", "--backends"]), ("load", ["--clients", "--warmup"]), ("idle", ["--seconds"])],
)
def test_bench_name_help_shows_the_benchmarks_own_options(name, options):
    result = _bench(name, "--help")
    assert result.exit_code == 0
    assert f"usage: rag bench {name}" in result.output
    for option in options:
        assert option in result.output


def test_bench_passes_options_to_the_benchmarks_parser():
    result = _bench("idle", "--seconds", "soon")
    assert result.exit_code == 2  # argparse's usage error, from the benchmark's own parser
    assert sys.argv[0] != "rag bench idle"  # restored after the run


def test_benchmark_runs_without_what_the_cli_set_after_start_and_everything_is_put_back(monkeypatch):
    seen = {}

    def main(argv):
        seen.update(argv=argv, argv0=sys.argv[0], added=os.environ.get("RAG_BENCH_TEST_ADDED"))
        os.environ["RAG_BENCH_TEST_BY_BENCHMARK"] = "1"
        return 3

    monkeypatch.setattr(bench_cli.importlib, "import_module", lambda name: SimpleNamespace(main=main))
    monkeypatch.setenv("RAG_BENCH_TEST_ADDED", "1")  # as rag.cli.quiet_libraries sets its defaults
    assert bench_cli.run_benchmark("idle", ["--seconds", "1"]) == 3
    assert seen == {"argv": ["--seconds", "1"], "argv0": "rag bench idle", "added": None}
    assert os.environ.get("RAG_BENCH_TEST_ADDED") == "1"
    assert "RAG_BENCH_TEST_BY_BENCHMARK" not in os.environ


def test_rag_cli_imports_no_benchmark_and_no_numpy():
    code = ("import sys, rag.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('benchmarks', 'numpy', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_percentile_linear_and_nearest_rank():
    assert common.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert common.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    # Nearest rank: the smallest value with at least q % of the values at or below it.
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert [common.percentile(values, q, common.NEAREST_RANK) for q in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    ordered = [float(v) for v in range(1, 101)]
    assert common.percentile(ordered, 95, common.NEAREST_RANK) == 95.0
    assert math.isnan(common.percentile([], 50))


def test_free_port_can_be_bound():
    port = common.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_load_questions_reads_json_lines(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"id": "q1", "question": "Who?"}\n\n{"id": "q2", "question": "Why?", "unanswerable": true}\n',
                    encoding="utf-8")
    assert common.load_questions(path) == [
        {"id": "q1", "question": "Who?"},
        {"id": "q2", "question": "Why?", "unanswerable": True},
    ]


def test_a_fit_is_recorded_with_its_data_and_command_where_the_stage_loads_it(tmp_path, monkeypatch):
    import json

    from benchmarks.common import write_fit
    from rag import answerability

    fit_file = tmp_path / "answerability.json"
    fit_file.write_text(answerability.FIT_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(answerability, "FIT_FILE", fit_file)
    write_fit("reading", {"weights": [0.5, 1.5, 0.1], "threshold": 0.4}, fitted_on="a tune sample",
              argv=["--squad", "4"])
    fit = json.loads(fit_file.read_text(encoding="utf-8"))
    assert fit["reading"] == {"weights": [0.5, 1.5, 0.1], "threshold": 0.4, "fitted_on": "a tune sample",
                              "command": "rag bench tune-reading --squad 4"}
    assert fit["features"]["weights"] == dict(zip(answerability.FEATURE_NAMES, answerability.WEIGHTS))  # untouched
