"""`rag bench load-openai`: the report, the ratios between modes, answer quality and agreement, and
the wait for the corpus state, with recorded results and a fake index folder (no server, no model)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from benchmarks import bench_load_openai as bench
from benchmarks.bench_load import Question
from benchmarks.bench_load_openai import Measured, Result
from benchmarks.common import vm_rss

QUESTIONS = [
    Question("d01", "Who?", keywords=(("Alice",),)),
    Question("d02", "Which?", keywords=(("OpenAI",),)),
    Question("u01", "Who won the cup?", unanswerable=True),
]
SOURCES = {"d01": ("a.txt",), "d02": ("b.txt",), "u01": ()}


def _result(question="d01", *, phase="measured", started=0.0, latency=1.0, streamed=False, first=None,
            error=None, refused=False, cited=(), keywords_ok=None, text="an answer") -> Result:
    return Result(0, question, streamed, phase, started, latency=latency, first_token=first, error=error,
                  refused=refused, citations=len(cited), keywords_ok=keywords_ok, text=text, cited=tuple(cited))


# -- one request, through a fake client -----------------------------------------------------------
def _client(pieces: list[str], final: dict):
    def create(model, messages, stream=False):
        assert stream and model == "rag" and messages[-1]["role"] == "user"
        chunks = [SimpleNamespace(content=p, model_extra={}, finish=None) for p in pieces]
        chunks.append(SimpleNamespace(content=None, model_extra=final, finish="stop"))
        return [SimpleNamespace(choices=[SimpleNamespace(delta=c, finish_reason=c.finish)]) for c in chunks]

    return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))


def test_a_stream_corrected_once_complete_is_counted_for_a_model_and_an_error_for_extractive(tmp_path):
    (tmp_path / "a.txt").write_text("Intro.\nAlice wrote it.\n", encoding="utf-8")
    citation = {"marker": 1, "file": "a.txt", "start_line": 2, "end_line": 2, "quote": "Alice wrote it.",
                "verified": True}
    final = {"text": "Alice wrote it [1].", "citations": [citation], "refused": False}
    client = _client(["It was ", "Bob [1]."], final)
    as_model = Result(0, "d01", True, "measured", 0.0)
    bench.ask(client, "rag", QUESTIONS[0], True, tmp_path, as_model, streamed_is_final=False)
    assert as_model.error is None and as_model.rewritten
    assert as_model.text == "Alice wrote it [1]." and as_model.cited == ("a.txt",)
    assert as_model.keywords_ok  # read in the checked answer, not in the draft
    assert as_model.first_token is not None
    as_extractive = Result(0, "d01", True, "measured", 0.0)
    bench.ask(client, "rag", QUESTIONS[0], True, tmp_path, as_extractive)
    assert "differ" in as_extractive.error


def test_a_citation_not_at_its_lines_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("Intro.\nAlice wrote it.\n", encoding="utf-8")
    wrong = {"marker": 1, "file": "a.txt", "start_line": 1, "end_line": 1, "quote": "Alice wrote it.",
             "verified": True}
    result = Result(0, "d01", True, "measured", 0.0)
    bench.ask(_client(["Alice [1]."], {"text": "Alice [1].", "citations": [wrong], "refused": False}),
              "rag", QUESTIONS[0], True, tmp_path, result)
    assert result.error.startswith("ValueError: quote not at a.txt:1-1")


# -- quality ------------------------------------------------------------------------------------
def test_quality_counts_gold_sources_keywords_and_refusals_over_answerable_answers():
    ok = [
        _result("d01", cited=("a.txt",), keywords_ok=True),           # gold cited, keywords
        _result("d01", cited=("b.txt",), keywords_ok=False),          # other file, no keywords
        _result("d02", cited=("c.txt", "b.txt"), keywords_ok=True),   # gold among others
        _result("d02", refused=True),                                 # refused: neither
        _result("u01", refused=True),
        _result("u01", refused=False, cited=("a.txt",)),              # unanswerable answered
    ]
    q = bench.quality(ok, QUESTIONS, SOURCES)
    assert q["answerable"] == 4
    assert (q["gold_source_cited"], q["gold_source_cited_share"]) == (2, 0.5)
    assert (q["expected_keywords"], q["expected_keywords_share"]) == (2, 0.5)
    assert q["answerable_refused"] == 1
    assert (q["unanswerable"], q["unanswerable_answered"]) == (2, 1)


def test_quality_of_no_answers_has_no_shares():
    q = bench.quality([], QUESTIONS, SOURCES)
    assert q["gold_source_cited_share"] is None and q["expected_keywords_share"] is None


def test_gold_sources_read_from_the_dev_set(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"id": "d01", "question": "?", "sources": ["a.txt"]}) + "\n\n"
                    + json.dumps({"id": "u", "question": "?", "unanswerable": True}) + "\n", encoding="utf-8")
    assert bench.gold_sources(path) == {"d01": ("a.txt",), "u": ()}


# -- memory --------------------------------------------------------------------------------------
def test_rss_summary_takes_medians_of_the_first_and_last_ten_seconds():
    mb = 2**20
    samples = [(-1.0, 999 * mb)]  # before the measured window: ignored
    samples += [(float(t), (100 + (t % 3)) * mb) for t in range(0, 11)]    # median 101 MB
    samples += [(float(t), 500 * mb) for t in range(11, 40)]               # the middle: ignored
    samples += [(float(t), 110 * mb) for t in range(40, 51)]               # median 110 MB
    rss = bench.rss_summary(samples, end=50.0)
    assert rss["first_window_mb"] == 101.0 and rss["last_window_mb"] == 110.0
    assert rss["growth_pct"] == pytest.approx(8.91, abs=0.01)
    assert rss["samples"] == 51


def test_rss_summary_without_samples_reports_nothing():
    assert bench.rss_summary([], end=30.0) == {"first_window_mb": None, "last_window_mb": None,
                                               "growth_pct": None, "window_s": 10.0, "samples": 0}


# -- one mode ------------------------------------------------------------------------------------
def _mode(parallel, results, *, state=None, cpu=None) -> dict:
    measured = Measured(results, cpu or {"server_cores": 1.5, "load_generator_cores": 0.1},
                        [(float(t), 2**30) for t in range(21)])
    return bench.mode_summary(parallel, measured, QUESTIONS, SOURCES, state=state or {"waited": False})


def test_mode_summary_measures_only_the_measured_window():
    results = [
        _result(phase="warmup", started=-5.0, latency=50.0),
        _result(started=0.0, latency=2.0, streamed=True, first=0.5),
        _result(started=1.0, latency=4.0, streamed=False),
        _result(started=2.0, latency=8.0, streamed=True, first=1.5),
    ]
    m = _mode(4, results)
    assert m["setting"] == "RAG_LLM_PARALLEL=4"
    assert (m["requests"], m["warmup_requests"], m["errors"]) == (3, 1, 0)
    assert m["latency_s"] == {"p50": 4.0, "p95": 8.0, "max": 8.0}
    assert m["latency_streamed_s"]["p50"] == 2.0 and m["latency_complete_s"]["p50"] == 4.0
    assert m["first_text_s"]["p95"] == 1.5
    assert m["measured_span_s"] == 10.0 and m["throughput_rps"] == 0.3
    assert m["server_time_s"] is None
    assert m["rss"]["growth_pct"] == 0.0
    assert m["passed"]


def test_mode_fails_on_an_error_anywhere_and_on_a_corpus_state_never_saved():
    failed = _mode(1, [_result(), _result(phase="warmup", error="APIConnectionError: refused")])
    assert not failed["passed"] and failed["errors"] == 1
    assert failed["error_samples"] == ["warmup d01: APIConnectionError: refused"]
    unsaved = _mode(1, [_result()], state={"waited": True, "saved": False, "seconds": 600})
    assert not unsaved["passed"]
    saved = _mode(1, [_result()], state={"waited": True, "saved": True, "seconds": 95.2})
    assert saved["passed"]
    assert not _mode(None, [])["passed"]  # no answer at all
    assert _mode(None, [_result()])["setting"] == "server default"


# -- across modes --------------------------------------------------------------------------------
def test_ratios_against_the_first_mode():
    one = _mode(1, [_result(latency=4.0, streamed=True, first=2.0), _result(started=1.0, latency=9.0)])
    four = _mode(4, [_result(latency=2.0, streamed=True, first=0.5), _result(started=1.0, latency=2.0),
                     _result(started=2.0, latency=3.0)])
    r = bench.ratios([one, four])
    assert r["against"] == "RAG_LLM_PARALLEL=1"
    (only,) = r["modes"]
    assert only["setting"] == "RAG_LLM_PARALLEL=4"
    assert only["throughput"] == pytest.approx((3 / 5) / (2 / 10), abs=0.001)
    assert only["latency_p95"] == pytest.approx(3.0 / 9.0, abs=0.001)
    assert only["first_text_p95"] == 0.25
    assert bench.ratios([one]) == {"against": "RAG_LLM_PARALLEL=1", "modes": []}


def test_a_ratio_against_nothing_is_none():
    empty = _mode(1, [])
    assert bench.ratios([empty, _mode(2, [_result()])])["modes"][0]["throughput"] is None


def test_answer_texts_keep_measured_successful_answers_only():
    results = [_result("d01", text="x"), _result("d01", text="y"), _result("d02", phase="warmup", text="z"),
               _result("d02", error="boom", text="")]
    assert bench.answer_texts(results) == {"d01": {"x", "y"}}


def test_same_answers_counts_questions_whose_texts_differ_between_modes():
    first = {"d01": {"x"}, "d02": {"y"}, "u01": {"no"}}
    second = {"d01": {"x"}, "d02": {"y", "y2"}, "u01": {"no"}, "d03": {"z"}}
    same = bench.same_answers([first, second])
    assert same["same_by_question"] == {"d01": True, "d02": False, "u01": True}
    assert (same["questions_compared"], same["questions_differing"]) == (3, 1)
    assert same["not_in_every_mode"] == ["d03"]
    assert bench.same_answers([first]) is None


def test_report_and_table_put_modes_side_by_side():
    one = _mode(1, [_result(latency=4.0)], state={"waited": True, "saved": True, "seconds": 95.2})
    four = _mode(4, [_result(latency=2.0, error="Timeout")], state={"waited": True, "saved": True, "seconds": 101.0})
    run = {"generator": "llamacpp", "model": "qwen", "model_id": "rag", "clients": 2, "stream": "mixed",
           "warmup_s": 5.0, "duration_s": 30.0, "per_client": None, "parallel": [1, 4], "questions": 3}
    s = bench.report(run, [one, four], [{"d01": {"a"}}, {"d01": {"b"}}])
    assert set(s) >= {"modes", "ratios", "machine"} and not s["passed"]
    json.dumps(s)  # one JSON object
    text = bench.human(s)
    header = next(line for line in text.splitlines() if "RAG_LLM_PARALLEL=1" in line and "RAG_LLM_PARALLEL=4" in line)
    assert header.index("RAG_LLM_PARALLEL=1") < header.index("RAG_LLM_PARALLEL=4")
    assert "corpus state wait s" in text and "95.2" in text and "101" in text
    assert "streams corrected at end" in text
    assert "1 of 1 questions differ between modes: d01" in text
    assert "RAG_LLM_PARALLEL=4: measured d01: Timeout" in text
    assert "not measured" in text
    assert text.endswith("FAILED")


# -- the corpus state ----------------------------------------------------------------------------
class FakeClock:
    def __init__(self, on_sleep=None) -> None:
        self.now, self.on_sleep = 0.0, on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


def _index(tmp_path):
    index = tmp_path / "index"
    (index / "kv").mkdir(parents=True)
    (index / "CURRENT").write_text("b2\n", encoding="utf-8")
    (index / "kv" / "b1-abc.state").write_bytes(b"old build")  # another build's state does not count
    (index / "kv" / "b2-0123456789ab.npz").write_bytes(b"vectors")
    return index


def test_wait_for_state_waits_for_the_renamed_file_of_the_build_in_use(tmp_path, capsys):
    index = _index(tmp_path)
    tmp = index / "kv" / ".b2-abc.state.tmp"

    def server(now: float) -> None:
        if now == 20.0:
            tmp.write_bytes(b"half")
        if now == 75.0:
            tmp.replace(index / "kv" / "b2-abc.state")

    clock = FakeClock(server)
    path, waited = bench.wait_for_state(index, 600, clock=clock, sleep=clock.sleep)
    assert path.name == "b2-abc.state" and waited == 75.0
    progress = [line for line in capsys.readouterr().err.splitlines() if "waiting for the corpus state" in line]
    assert len(progress) == 2 and "30s" in progress[0] and "60s" in progress[1]


def test_wait_for_state_times_out_and_notices_a_dead_server(tmp_path):
    index = _index(tmp_path)
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="within 12s"):
        bench.wait_for_state(index, 12, every=1000, clock=clock, sleep=clock.sleep)
    assert clock.now == 12.0
    clock = FakeClock()
    with pytest.raises(RuntimeError, match="exited"):
        bench.wait_for_state(index, 600, alive=lambda: clock.now < 3, clock=clock, sleep=clock.sleep)


def test_saved_state_without_a_current_build_takes_any_completed_state(tmp_path):
    kv = tmp_path / "kv"
    kv.mkdir()
    assert bench.saved_state(tmp_path) is None
    (kv / ".x-abc.state.tmp").write_bytes(b"")
    assert bench.saved_state(tmp_path) is None
    (kv / "x-abc.state").write_bytes(b"")
    assert bench.saved_state(tmp_path) == kv / "x-abc.state"


# -- the command line ----------------------------------------------------------------------------
def test_parallel_values():
    assert bench.parallel_values(None) == [None]
    assert bench.parallel_values("1,4") == [1, 4]
    assert bench.parallel_values(" 2 , 8 ") == [2, 8]
    for bad in ("0,4", "one", ","):
        with pytest.raises(ValueError):
            bench.parallel_values(bad)


def test_command_line_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--generator", "--parallel", "--per-client", "--no-wait-state", "--state-timeout"):
        assert option in out
    for bad in (["--parallel", "0"], ["--per-client", "0"], ["--generator", "openai"]):
        with pytest.raises(SystemExit) as exit_:
            bench.main(bad)
        assert exit_.value.code == 2


def test_vm_rss_reads_a_live_process_and_is_zero_for_a_gone_one():
    assert vm_rss(os.getpid()) > 2**20
    assert vm_rss(2**22 + 7) == 0  # above the kernel's largest pid


def test_the_state_saved_while_clients_ask_is_timed_and_reported(tmp_path):
    import threading

    index = _index(tmp_path)
    state = {"read_under_load": True, "saved_after_s": None}
    done = threading.Event()
    watcher = threading.Thread(target=bench.watch_state, args=(index, state, done))
    watcher.start()
    assert bench.saved_under_load(state) == "NOT saved"
    (index / "kv" / "b2-abc.state").write_bytes(b"state")
    watcher.join(timeout=5)
    done.set()
    assert state["saved_after_s"] is not None and bench.saved_under_load(state).startswith("after ")
    assert bench.saved_under_load({"waited": True}) == "not read under load"


def test_answers_asked_after_a_state_saved_under_load_are_summed_apart():
    results = [_result(started=float(t), latency=6.0 if t < 10 else 2.0) for t in range(0, 20, 2)]
    m = _mode(1, results, state={"waited": False, "read_under_load": True, "saved_after_s": 10.0})
    after = m["after_state"]
    assert after["requests"] == 5 and after["latency_s"]["p50"] == 2.0
    assert after["throughput_rps"] == round(5 / (m["measured_span_s"] - 10.0), 3)
    assert "after_state" not in _mode(1, results)
    run = {"generator": "llamacpp", "model": "qwen", "model_id": "rag", "clients": 2, "stream": "mixed",
           "warmup_s": 0.0, "duration_s": 20.0, "per_client": None, "parallel": [1], "questions": 3}
    assert f"5 / 2 / 2 / {after['throughput_rps']:g}" in bench.human(bench.report(run, [m], [{}]))
