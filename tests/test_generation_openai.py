"""The openai backend: error mapping against a scripted local HTTP server, and for real against
`python -m llama_cpp.server` serving SmolLM2 on a loopback port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag.errors import ConfigError, GeneratorError, GeneratorUnavailableError
from rag.generation.base import GenerationRequest, Message
from rag.generation.openai_compat import OpenAIGenerator
from rag.models import small_llm_path
from rag.pipeline import Rag

from fakes import HASHING_FLOOR, check_answer_structure, write_corpus

DANUBE = "Which cities stand on the Danube?"
REQUEST = GenerationRequest(
    question="q", passages=[], messages=[Message(role="user", content="Say hi.")], max_tokens=8
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- errors, against a server that answers every request with one status ------------------------------
@pytest.fixture
def status_server():
    """A loopback HTTP server; set `.status` and `.body`, read `.seen` (Authorization headers)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            server.seen.append(self.headers.get("authorization"))
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.dumps(server.body).encode()
            self.send_response(server.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.status, server.body, server.seen = 500, {"error": {"message": "boom"}}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (401, GeneratorUnavailableError, "rejected the API key"),
        (404, GeneratorUnavailableError, "does not serve model 'm'"),
        (429, GeneratorError, "rate limiting"),
        (500, GeneratorError, "HTTP 500"),
    ],
)
def test_http_errors_become_readable_generator_errors(status_server, status, error, message):
    status_server.status = status
    gen = OpenAIGenerator(status_server.url, "m", api_key="sk-secret-123", retries=0, timeout=5)
    with pytest.raises(error, match=message) as info:
        list(gen.stream(REQUEST))
    assert "sk-secret-123" not in str(info.value)
    assert status_server.seen == ["Bearer sk-secret-123"]  # sent once (no retries), to the server only


def test_unreachable_endpoint_is_unavailable():
    gen = OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "m", retries=0, timeout=5)
    with pytest.raises(GeneratorUnavailableError, match="cannot reach"):
        list(gen.stream(REQUEST))


def test_missing_endpoint_setting_says_how_to_fix_it(make_settings):
    with pytest.raises(ConfigError, match="RAG_OPENAI_BASE_URL"):
        OpenAIGenerator.from_settings(make_settings())


# -- for real: llama_cpp.server with SmolLM2 -------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on a free loopback port, stopped after the module."""
    pytest.importorskip("llama_cpp.server.app")
    model = small_llm_path()
    if model is None:
        pytest.skip("SmolLM2 not installed: make install-test")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", "smollm2",
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
            "--verbose", "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start in 120s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server_settings(make_settings, in_tmp, llama_server):
    write_corpus(in_tmp / "seeds")

    def make(**overrides):
        values = dict(
            chunk_tokens=24, chunk_overlap=0, top_k=3, relevance_floor=HASHING_FLOOR,
            openai_base_url=llama_server, openai_model="smollm2", openai_retries=0, openai_timeout=120,
            llm_max_tokens=48, llm_context_tokens=2048, llm_temperature=0,
        )
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_openai_backend_streams_a_grounded_answer_from_the_server(server_settings):
    stream = Rag(server_settings(generator="openai")).ask_stream(DANUBE)
    pieces = list(stream)
    assert len(pieces) > 1  # server-sent events, piece by piece
    answer = stream.answer
    check_answer_structure(answer, "openai")
    assert answer.timings.first_token is not None


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_auto_prefers_the_configured_endpoint(server_settings):
    # A local model is installed too; an endpoint, when set, wins.
    answer = Rag(server_settings(generator="auto", llm_model_path=small_llm_path())).ask(DANUBE)
    check_answer_structure(answer, "openai")
