"""Generation faults against a fake OpenAI-compatible server on 127.0.0.1.

Timeouts, refused connections, HTTP 500/429 with retries and backoff, streams that break halfway
or never end: the user always gets an answer in bounded time, either what arrived plus a note
(Answer.fallback_reason) or an extractive answer marked as a fallback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAI
from rag.config import Settings, load_settings
from rag.pipeline import Rag

QUESTION = "Hekla erupted in which year?"
CORPUS = {
    "volcanoes.txt": (
        "Volcanoes of Iceland\n"
        "\n"
        "Hekla is the most active volcano in southern Iceland.\n"
        "Hekla erupted in 1947 and again in the year 2000.\n"
        "\n"
        "Katla lies beneath the Myrdalsjokull glacier.\n"
    ),
    "rivers.txt": (
        "The Danube flows through ten countries before reaching the Black Sea.\n"
        "Vienna and Budapest both stand on the Danube.\n"
    ),
}
# Slack for a loaded 2-core machine: a deadline must hold to within this many seconds.
SLACK = 3.0


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no developer .env is read
    for rel, text in CORPUS.items():
        (tmp_path / "seeds").mkdir(exist_ok=True)
        (tmp_path / "seeds" / rel).write_text(text, encoding="utf-8")
    return tmp_path


def settings_for(tmp_path: Path, server: FakeOpenAI | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        seeds_dir=tmp_path / "seeds",
        index_dir=tmp_path / "index",
        embedding_model="hashing-256",
        generator="openai",
        openai_base_url=server.base_url if server else None,
        openai_timeout=10.0,
        openai_retries=0,
        answer_deadline=60.0,
        relevance_floor=0.05,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def _warm_openai_client(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Import the openai client and make one request up front, so the seconds that a first
    import takes on a busy machine are not counted against the deadlines measured below."""
    tmp = tmp_path_factory.mktemp("warm")
    (tmp / "seeds").mkdir()
    for rel, text in CORPUS.items():
        (tmp / "seeds" / rel).write_text(text, encoding="utf-8")
    with FakeOpenAI() as server:
        Rag(settings_for(tmp, server)).ask(QUESTION)


def ready_rag(settings: Settings) -> Rag:
    rag = Rag(settings)
    rag.index()
    rag.generator()  # build the client now: the deadline is about answering
    return rag


def assert_grounded(answer) -> None:
    for citation in answer.citations:
        assert citation.verified, citation


# -- healthy baseline -------------------------------------------------------------------------------
def test_a_healthy_stream_is_answered_by_the_endpoint(corpus):
    with FakeOpenAI(script=["ok"]) as server:
        answer = ready_rag(settings_for(corpus, server)).ask(QUESTION)
    assert answer.generator == "openai"
    assert answer.fallback_reason is None
    assert answer.text == "Hekla erupted in 1947 [1]."
    assert answer.citations and answer.citations[0].source == "volcanoes.txt"
    assert_grounded(answer)
    assert server.count == 1


# -- retries and backoff ----------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 429])
@pytest.mark.parametrize("retries", [0, 2])
def test_retries_follow_rag_openai_retries_then_fall_back(corpus, monkeypatch, status, retries):
    with FakeOpenAI(script=[status]) as server:
        for key, value in {
            "RAG_SEEDS_DIR": str(corpus / "seeds"),
            "RAG_INDEX_DIR": str(corpus / "index"),
            "RAG_EMBEDDING_MODEL": "hashing-256",
            "RAG_GENERATOR": "openai",
            "RAG_OPENAI_BASE_URL": server.base_url,
            "RAG_OPENAI_RETRIES": str(retries),
            "RAG_RELEVANCE_FLOOR": "0.05",
        }.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        assert settings.openai_retries == retries
        answer = ready_rag(settings).ask(QUESTION)
    assert server.count == retries + 1, "every retry reaches the server, and no more"
    assert answer.generator == "extractive (fallback from openai)"
    assert f"HTTP {status}" in answer.fallback_reason or "429" in answer.fallback_reason
    assert answer.citations and answer.citations[0].source == "volcanoes.txt"
    assert_grounded(answer)
    if retries:
        gaps = [b.at - a.at for a, b in zip(server.attempts, server.attempts[1:])]
        # Exponential backoff: 0.5 s then 1 s, less up to 25 % jitter.
        assert gaps[0] >= 0.3 and gaps[1] >= 0.7, gaps


def test_a_transient_500_is_retried_and_then_answered(corpus):
    with FakeOpenAI(script=[500, 500, "ok"]) as server:
        answer = ready_rag(settings_for(corpus, server, openai_retries=2)).ask(QUESTION)
    assert server.count == 3
    assert answer.generator == "openai"
    assert answer.fallback_reason is None
    assert answer.text == "Hekla erupted in 1947 [1]."


# -- no answer from the endpoint ----------------------------------------------------------------------
def test_a_server_that_never_answers_times_out_after_the_retries(corpus):
    with FakeOpenAI(script=["stall"]) as server:
        rag = ready_rag(settings_for(corpus, server, openai_timeout=1.0, openai_retries=1))
        started = time.monotonic()
        answer = rag.ask(QUESTION)
        elapsed = time.monotonic() - started
    assert server.count == 2
    assert answer.generator == "extractive (fallback from openai)"
    assert "did not answer in time" in answer.fallback_reason
    assert "RAG_OPENAI_TIMEOUT" in answer.fallback_reason
    assert elapsed < 2 * 1.0 + 1.0 + SLACK, elapsed
    assert_grounded(answer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_falls_back_and_names_the_setting(corpus):
    rag = ready_rag(settings_for(corpus, openai_base_url=f"http://127.0.0.1:{free_port()}/v1", openai_retries=1))
    answer = rag.ask(QUESTION)
    assert answer.generator == "extractive (fallback from openai)"
    assert "cannot reach" in answer.fallback_reason and "RAG_OPENAI_BASE_URL" in answer.fallback_reason
    assert answer.citations and answer.citations[0].verified


# -- streams that break ---------------------------------------------------------------------------------
def test_a_stream_that_breaks_halfway_keeps_what_arrived_with_a_note(corpus):
    with FakeOpenAI(script=["break"], break_after=2) as server:
        rag = ready_rag(settings_for(corpus, server))
        stream = rag.ask_stream(QUESTION)
        pieces = list(stream)
    answer = stream.answer
    assert "".join(pieces) == "Hekla erupted "
    assert answer.text.startswith("Hekla erupted")
    assert answer.generator == "openai"
    assert "incomplete" in answer.fallback_reason and "broke off" in answer.fallback_reason
    assert_grounded(answer)


def test_a_stream_that_just_stops_is_not_passed_off_as_complete(corpus):
    # The body ends cleanly but without a finish_reason: the server died between two events.
    with FakeOpenAI(script=["eof"], break_after=2) as server:
        answer = ready_rag(settings_for(corpus, server)).ask(QUESTION)
    assert answer.text.startswith("Hekla erupted")
    assert answer.fallback_reason and "incomplete" in answer.fallback_reason
    assert "ended the stream" in answer.fallback_reason


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [("garbage", "malformed event"), ("error_event", "sent an error")],
)
def test_a_broken_event_stream_falls_back_instead_of_crashing(corpus, behaviour, says):
    with FakeOpenAI(script=[behaviour]) as server:
        answer = ready_rag(settings_for(corpus, server)).ask(QUESTION)
    assert answer.generator == "extractive (fallback from openai)"
    assert says in answer.fallback_reason
    assert "the model crashed" not in answer.fallback_reason  # the server's own text is not echoed
    assert_grounded(answer)


# -- the answer deadline ------------------------------------------------------------------------------
DEADLINE = 2.0


def test_a_server_trickling_tokens_forever_is_cut_off_at_the_deadline(corpus):
    with FakeOpenAI(script=["trickle"], trickle_interval=0.05) as server:
        rag = ready_rag(settings_for(corpus, server, answer_deadline=DEADLINE))
        started = time.monotonic()
        answer = rag.ask(QUESTION)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + SLACK, elapsed
    assert answer.generator == "openai"
    assert "cut off" in answer.fallback_reason and "RAG_ANSWER_DEADLINE" in answer.fallback_reason
    # What arrived ("w0 w1 ...") is supported by no passage: the passages' own sentences are shown
    # instead, and the answer says so.
    assert "w0" not in answer.text and answer.citations
    assert "not supported by the passages" in answer.fallback_reason
    assert_grounded(answer)


@pytest.mark.parametrize("behaviour", ["keepalive", "stall"])
def test_a_server_that_sends_nothing_usable_cannot_hold_an_answer_past_the_deadline(corpus, behaviour):
    # keepalive: bytes keep flowing, so no read timeout ever fires; stall: a read timeout far
    # beyond the deadline. Either way the answer must come at the deadline, extractively.
    with FakeOpenAI(script=[behaviour]) as server:
        rag = ready_rag(settings_for(corpus, server, answer_deadline=DEADLINE, openai_timeout=30.0))
        started = time.monotonic()
        answer = rag.ask(QUESTION)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + SLACK, elapsed
    assert answer.generator == "extractive (fallback from openai)"
    assert "RAG_ANSWER_DEADLINE" in answer.fallback_reason
    assert answer.citations and answer.citations[0].verified


def test_the_deadline_holds_for_any_backend_that_blocks(corpus, request):
    """A backend blocked inside its own code (a local model evaluating a huge prompt) is not
    waited for past the deadline either; it is stopped at its next piece."""
    from rag import generation

    release = threading.Event()
    stopped = threading.Event()

    class Blocking:
        name = "blocking"
        context_tokens = 8192

        def stream(self, request):
            try:
                yield "Hekla "
                release.wait(30)
                yield "erupted "
                yield "forever "
            finally:
                stopped.set()

    generation.register("blocking", lambda settings, embedder: Blocking())
    request.addfinalizer(lambda: generation.unregister("blocking"))
    try:
        rag = ready_rag(settings_for(corpus, generator="blocking", answer_deadline=DEADLINE))
        started = time.monotonic()
        answer = rag.ask(QUESTION)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert elapsed < DEADLINE + SLACK
    assert answer.text.startswith("Hekla")
    assert "cut off" in answer.fallback_reason
    assert stopped.wait(5), "the abandoned backend was closed once it moved again"


def test_stopping_a_stream_early_closes_the_connection(corpus):
    with FakeOpenAI(script=["trickle"], trickle_interval=0.05) as server:
        rag = ready_rag(settings_for(corpus, server))
        before = set(threading.enumerate())
        stream = rag.ask_stream(QUESTION)
        it = iter(stream)
        first = [next(it) for _ in range(3)]
        stream.close()

        def workers() -> list[threading.Thread]:
            return [t for t in threading.enumerate()
                    if t.name == "rag-generate" and t not in before and t.is_alive()]

        deadline = time.monotonic() + 5
        while workers() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Still inside the server's lifetime: the worker ended because the client let go of
        # the stream, not because the server closed it.
        assert not workers()
    assert first == ["w0 ", "w1 ", "w2 "]


# -- the CLI ---------------------------------------------------------------------------------------------
def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k not in ("COLUMNS", "LINES")}
    env.update(
        RAG_EMBEDDING_MODEL="hashing-256",
        RAG_SEEDS_DIR=str(tmp_path / "seeds"),
        RAG_INDEX_DIR=str(tmp_path / "index"),
        RAG_RELEVANCE_FLOOR="0.05",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


def rag_cli() -> list[str]:
    script = Path(sys.executable).with_name("rag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rag.cli"]


def test_rag_ask_prints_the_fallback_answer(corpus):
    with FakeOpenAI(script=[500]) as server:
        env = cli_env(corpus, RAG_GENERATOR="openai", RAG_OPENAI_BASE_URL=server.base_url, RAG_OPENAI_RETRIES="0")
        proc = subprocess.run(
            [*rag_cli(), "ask", QUESTION], env=env, cwd=corpus, capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "HTTP 500" in proc.stderr
    assert "Hekla" in proc.stdout.split("Sources:")[0]
