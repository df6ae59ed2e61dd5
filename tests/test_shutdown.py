"""Nothing lost, nothing crashes: the local model's background work in real processes.

Each test runs the product in fresh Python processes with the real small model (SmolLM2), the way
a script or a terminal user would, many times over, because what it guards against is a race:
llama.cpp loading a model in one thread while another prints, and llama.cpp objects freed during
the interpreter's teardown while a background read is still inside a decode.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag.models import default_llm_path, small_llm_path

from fakes import HASHING_FLOOR, write_corpus

# The small model keeps these fast; RAG_TEST_LLM=default runs them with the default model.
MODEL = default_llm_path() if os.environ.get("RAG_TEST_LLM") == "default" else small_llm_path()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(MODEL is None, reason="SmolLM2 not installed: make install-test"),
]
pytest.importorskip("llama_cpp")
RUNS = 20
REPO = Path(__file__).resolve().parents[1]


def product_env(root: Path, index: str = "index") -> dict[str, str]:
    """A user's environment: the small model by path, a fresh index folder under `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({
        "RAG_SEEDS_DIR": str(root / "seeds"),
        "RAG_INDEX_DIR": str(root / index),
        "RAG_EMBEDDING_MODEL": "hashing-256",
        "RAG_CHUNK_TOKENS": "24",
        "RAG_CHUNK_OVERLAP": "0",
        "RAG_RELEVANCE_FLOOR": str(HASHING_FLOOR),
        "RAG_ANSWERABILITY_READ_THRESHOLD": "0",
        "RAG_GENERATOR": "llamacpp",
        "RAG_LLM_MODEL_PATH": str(MODEL),
        "RAG_LLM_MAX_TOKENS": "24",
        "RAG_LLM_CONTEXT_TOKENS": os.environ.get("RAG_TEST_LLM_CONTEXT", "2048"),
        "RAG_LLM_TEMPERATURE": "0",
        "RAG_LLM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    })
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_many(run, count: int = RUNS) -> list:
    """`run(i)` for i in range(count), two at a time (two cores)."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, range(count)))


PRINTS_WHILE_LOADING = textwrap.dedent("""
    import sys
    from pathlib import Path
    from rag.corpus_cache import CorpusCache, state_path
    from rag.generation.llamacpp import LlamaCppGenerator
    from rag.types import Chunk

    model = LlamaCppGenerator(Path(sys.argv[1]), context_tokens=2048, threads=1)
    text = "The Danube flows through Vienna and Budapest. " * 40
    chunks = [Chunk(id="c1", source="river.txt", ordinal=0, text=text, start_char=0,
                    end_char=len(text), start_line=1, end_line=1, tokens=400)]
    cache = CorpusCache(Path(sys.argv[2]))
    cache.build_in_background("b1", model.fingerprint, chunks, model.private_copy)
    for i in range(1000):
        print(f"line {i}")
        if i % 100 == 0:
            model.private_copy().close()  # another context made meanwhile: the same silencing risk
""")


def test_everything_printed_while_models_load_in_the_background_arrives(tmp_path):
    def run(i: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", PRINTS_WHILE_LOADING, str(MODEL), str(tmp_path / f"i{i}")],
                              capture_output=True, text=True, timeout=300, env=product_env(tmp_path), cwd=tmp_path)

    for done in run_many(run):
        lines = done.stdout.splitlines()
        assert done.returncode == 0, done.stderr[-2000:]
        assert lines == [f"line {i}" for i in range(1000)], f"{len(lines)} of 1000 lines arrived"


def test_rag_ask_with_the_local_model_writes_its_answer_to_a_file_every_time(tmp_path):
    write_corpus(tmp_path / "seeds")

    def run(i: int) -> tuple[int, str, str]:
        out = tmp_path / f"answer-{i}.txt"
        with out.open("w") as fh:  # stdout is a file, as with `rag ask ... > out.txt`
            done = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "Which cities stand on the Danube?",
                                   "-g", "llamacpp"], stdout=fh, stderr=subprocess.PIPE, text=True, timeout=300,
                                  env=product_env(tmp_path, index=f"index-{i}"), cwd=tmp_path)
        return done.returncode, out.read_text(), done.stderr

    for code, written, stderr in run_many(run):
        assert code == 0, stderr[-2000:]
        assert "Sources:" in written or "do not" in written.lower(), written  # the answer, cited or refused
        assert written.strip() and "Traceback" not in stderr


ASKS_AND_RETURNS = textwrap.dedent("""
    import rag
    answer = rag.ask("Which cities stand on the Danube?")
    assert answer.text
    print("answered", flush=True)
    # returns at once: the corpus state of this fresh index is still being read in the background
""")


def test_a_script_that_returns_while_a_background_read_runs_exits_cleanly(tmp_path):
    write_corpus(tmp_path / "seeds")

    def run(i: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", ASKS_AND_RETURNS], capture_output=True, text=True, timeout=300,
                              env=product_env(tmp_path, index=f"index-{i}"), cwd=tmp_path)

    for done in run_many(run):
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == "answered\n"
        assert "Traceback" not in done.stderr and "Segmentation" not in done.stderr


def interrupt(args: list[str], env: dict[str, str], cwd: Path, when: str) -> tuple[int, str, str]:
    """Run `rag ARGS`, press Ctrl+C (SIGINT) once `when` has been printed; the exit status and
    everything printed."""
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd, bufsize=1)
    printed: list[str] = []

    def read(stream) -> None:
        for line in stream:
            printed.append(line)

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 240
    while when not in "".join(printed) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be interrupted: {''.join(printed)[-1000:]}"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    for r in readers:
        r.join(timeout=5)
    return code, "".join(printed), proc.args


def test_ctrl_c_during_ask_with_the_local_model_exits_130_and_the_index_still_loads(tmp_path):
    write_corpus(tmp_path / "seeds")
    env = product_env(tmp_path) | {"RAG_LLM_MAX_TOKENS": "400", "RAG_RELEVANCE_FLOOR": "-1", "RAG_LOG_LEVEL": "info"}
    # Interrupted once the model has started on the answer (the log line the info level adds),
    # each time on a fresh index, so the corpus is being read in the background too: 8 times,
    # because what can go wrong is a race between that read and the shutdown.
    def run(i: int) -> tuple[int, str, object]:
        fresh = env | {"RAG_INDEX_DIR": str(tmp_path / f"index-{i}")}
        return interrupt(["ask", "Which cities stand on the Danube?"], fresh, tmp_path, when="llamacpp: reading")

    for code, printed, _ in run_many(run, 8):
        assert code == 130 and "Traceback" not in printed, printed[-2000:]
        assert "Sources:" not in printed  # stopped before the answer was done
    for i in range(8):
        status = subprocess.run([sys.executable, "-m", "rag.cli", "status"], capture_output=True, text=True,
                                env=env | {"RAG_INDEX_DIR": str(tmp_path / f"index-{i}")}, cwd=tmp_path, timeout=120)
        assert status.returncode == 0 and "documents" in status.stdout, status.stderr


def test_ctrl_c_during_index_exits_130_and_the_previous_index_keeps_serving(tmp_path):
    seeds = write_corpus(tmp_path / "seeds")
    env = product_env(tmp_path)
    env.pop("RAG_EMBEDDING_MODEL")  # the packaged model: slow enough to be interrupted mid-build
    subprocess.run([sys.executable, "-m", "rag.cli", "index"], check=True, capture_output=True, env=env, cwd=tmp_path,
                   timeout=300)
    for i in range(150):
        (seeds / f"extra-{i}.txt").write_text("\n".join(f"Line {j} of note {i} about rivers and bridges." for j in range(40)))
    code, printed, _ = interrupt(["index", "--force"], env, tmp_path, when="full rebuild")
    assert code == 130 and "Traceback" not in printed, printed[-2000:]
    status = subprocess.run([sys.executable, "-m", "rag.cli", "status", "--json"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr
    assert '"documents":3' in status.stdout.replace(" ", "")  # the previous build, whole


def test_ctrl_c_stops_the_server_with_status_0_and_no_traceback(tmp_path):
    write_corpus(tmp_path / "seeds")
    env = product_env(tmp_path) | {"RAG_PORT": str(free_port())}
    code, printed, _ = interrupt(["serve"], env, tmp_path, when="Chat running on")
    assert code == 0 and "Traceback" not in printed and "WARNING" not in printed, printed[-2000:]
