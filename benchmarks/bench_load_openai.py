"""Load test of the OpenAI-compatible endpoint: concurrent `openai` clients against a real `rag serve`.

    rag bench load-openai                    # 8 clients, 120 s, extractive
    rag bench load-openai --stream on --json
    rag bench load-openai --generator llamacpp --parallel 1,4 --clients 8 --warmup 60 --duration 420

Starts `rag serve` on 127.0.0.1 over a copy of seeds/ (the `Server` of bench_load.py), waits for
its first index build and, with `--generator llamacpp`, for the corpus state the server reads
once per build in the background (`index/kv/<build>-<model>.state`, written aside then renamed;
`--no-wait-state` skips the wait, and reports when the server saved it while the clients asked). With llamacpp the copy is indexed (`rag index`) before the
server starts: its warm-up then finds a build and starts that read (a server that starts
without an index reads the corpus only when the first question comes). Then --clients threads,
each with its own `openai.OpenAI` client pointed at `/v1`, ask the answerable questions of the
seeds dev set plus one unanswerable, back to back: --warmup seconds not timed, then --duration
seconds measured (or, with `--per-client N`, N measured questions per client). With
`--stream mixed` (the default) even-numbered clients stream and odd ones do not.

`--parallel 1,4` measures one mode per value, one after the other: each a fresh server over its
own copy of the seeds and its own index, started with RAG_LLM_PARALLEL=<value>, asked by the same
clients the same questions in the same order. The report puts the modes side by side, with
ratios against the first value (answers/s: above 1 is more; p95 latency: below 1 is faster) and
the number of questions whose answer texts differ between modes.

Every answer is checked: a text, the `citations` and `refused` fields present, each citation's
quote found at its lines of the seed file, the final streamed chunk's checked `text` present
(with extractive, equal to what was streamed; a model's draft may be corrected once complete,
which is counted). Quality over the measured answers: the dev set's gold source file cited, the
expected keywords present, answerable questions refused, the unanswerable one answered. The
server's VmRSS is sampled every second (medians of the first and the last 10 s of the measured
window). The server's own time per answer is not measured: the endpoint's responses carry no
timings (beyond OpenAI's fields only `citations`, `refused` and the final chunk's `text`).
Exit status 1 on any failed request or check (a corpus state not saved in time included).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_load import RSS_WINDOW, Question, Server, choose_model, dev_questions, squash
from benchmarks.common import (DEV_SET, NEAREST_RANK, cpu_seconds, load_questions, log, machine, percentile,
                               vm_rss)

STATE_TIMEOUT = 600.0  # seconds to wait for the corpus state
STATE_LOG_EVERY = 30.0
SERVER_TIME_NOTE = ("not measured: the endpoint's responses carry no timings "
                    "(beyond OpenAI's fields only citations, refused and the final chunk's text)")


@dataclass
class Result:
    client: int
    question: str
    streamed: bool
    phase: str  # warmup, measured
    started: float  # seconds since the run started
    latency: float = 0.0
    first_token: float | None = None  # streams only: until the first text piece
    error: str | None = None
    refused: bool = False
    citations: int = 0
    keywords_ok: bool | None = None
    text: str = ""  # the checked answer, whitespace squashed
    cited: tuple[str, ...] = ()  # the file of each citation
    rewritten: bool = False  # streams only: the checked answer is not what was streamed


def check_citations(citations: list[dict], seeds: Path) -> str | None:
    """None when every citation quotes its file at its lines, else what is wrong."""
    for c in citations:
        missing = {"marker", "file", "start_line", "end_line", "quote", "verified"} - set(c)
        if missing:
            return f"citation without {sorted(missing)}"
        try:
            lines = (seeds / c["file"]).read_text(encoding="utf-8").split("\n")
        except OSError as exc:
            return f"cited file unreadable: {exc}"
        cited = squash("\n".join(lines[c["start_line"] - 1 : c["end_line"]]))
        if not c["verified"] or squash(c["quote"]) not in cited:
            return f"quote not at {c['file']}:{c['start_line']}-{c['end_line']}: {c['quote'][:80]!r}"
    return None


def ask(client, model: str, question: Question, stream: bool, seeds: Path, result: Result,
        *, streamed_is_final: bool = True) -> None:
    """One question through the endpoint; fills `result` (any failure is its error, never a crash).

    `streamed_is_final`: the streamed text must be the checked answer (the extractive generator's
    is); a model's draft may be corrected once complete, which is then counted, not an error.
    """
    started = time.monotonic()
    messages = [{"role": "user", "content": question.text}]
    try:
        if stream:
            pieces, final = [], None
            for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
                choice = chunk.choices[0]
                if choice.delta.content:
                    if result.first_token is None:
                        result.first_token = time.monotonic() - started
                    pieces.append(choice.delta.content)
                if choice.finish_reason is not None:
                    final = choice.delta
            result.latency = time.monotonic() - started
            if final is None:
                raise ValueError("the stream ended without its final chunk")
            text, extra = "".join(pieces), final.model_extra or {}
            if not extra.get("text", "").strip():
                raise ValueError("the final chunk carries no checked text")
            result.rewritten = squash(extra["text"]) != squash(text)
            if result.rewritten and streamed_is_final:
                raise ValueError(f"streamed text and checked text differ: {text[:60]!r}")
        else:
            message = client.chat.completions.create(model=model, messages=messages).choices[0].message
            result.latency = time.monotonic() - started
            text, extra = message.content or "", message.model_extra or {}
        if not text.strip():
            raise ValueError("empty answer")
        if "citations" not in extra or "refused" not in extra:
            raise ValueError(f"no citations/refused fields: {sorted(extra)}")
        result.refused, result.citations = bool(extra["refused"]), len(extra["citations"])
        result.text = squash(extra.get("text", text))
        result.cited = tuple(Path(str(c.get("file", ""))).name for c in extra["citations"])
        problem = check_citations(extra["citations"], seeds)
        if problem:
            raise ValueError(problem)
        if not question.unanswerable and not result.refused:
            low = result.text.lower()
            result.keywords_ok = all(any(k.lower() in low for k in group) for group in question.keywords)
    except Exception as exc:  # every failure is a counted error
        result.latency = result.latency or time.monotonic() - started
        result.error = f"{type(exc).__name__}: {exc}"[:300]


# -- the corpus state ----------------------------------------------------------------------------
def saved_state(index_dir: Path) -> Path | None:
    """The completed corpus state of the build in use (any build's when no CURRENT names one).

    The server writes it under a dot-name and renames it: a name ending in `.state` is complete.
    """
    from rag.corpus_cache import FOLDER
    from rag.faiss_folder import current_build_name

    build = current_build_name(index_dir)
    states = sorted((index_dir / FOLDER).glob(f"{build}-*.state" if build else "*.state"))
    return states[0] if states else None


def wait_for_state(index_dir: Path, timeout: float = STATE_TIMEOUT, *, alive: Callable[[], bool] = lambda: True,
                   every: float = STATE_LOG_EVERY, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[Path, float]:
    """Until the server has saved its corpus state: the file and the seconds waited.

    TimeoutError after `timeout` seconds, RuntimeError when `alive()` says the server is gone.
    """
    start = clock()
    next_log = start + every
    while True:
        path = saved_state(index_dir)
        now = clock()
        if path is not None:
            return path, now - start
        if not alive():
            raise RuntimeError("the server exited while reading its corpus state")
        if now - start >= timeout:
            raise TimeoutError(f"no corpus state saved in {index_dir} within {timeout:g}s")
        if now >= next_log:
            log(f"waiting for the corpus state: {now - start:.0f}s so far")
            next_log += every
        sleep(0.5)


# -- one mode: one server, the clients against it ------------------------------------------------
@dataclass
class Measured:
    results: list[Result]
    cpu: dict | None  # cores used from the start of the measured window to its end
    rss: list[tuple[float, int]]  # (seconds since the measured start, VmRSS bytes), one a second
    warmup: float = 0.0  # seconds of warm-up before the measured start (clients started then)


def run(args, server: Server, questions: list[Question]) -> Measured:
    import openai

    results: list[Result] = []
    rss: list[tuple[float, int]] = []
    lock, done = threading.Lock(), threading.Event()
    t0 = time.monotonic()
    measure_start = t0 + args.warmup
    measure_end = measure_start + args.duration if args.per_client is None else float("inf")
    cpu_start: list[float] = []
    pid = server.process.pid

    def user(number: int) -> None:
        client = openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0,
                               timeout=args.timeout)
        stream = {"on": True, "off": False}.get(args.stream, number % 2 == 0)
        turn, measured = number, 0
        while time.monotonic() < measure_end and (args.per_client is None or measured < args.per_client):
            question = questions[turn % len(questions)]
            turn += 1
            now = time.monotonic()
            phase = "warmup" if now < measure_start else "measured"
            measured += phase == "measured"
            result = Result(number, question.id, stream, phase, now - t0)
            ask(client, args.model, question, stream, server.seeds, result,
                streamed_is_final=args.generator == "extractive")
            with lock:
                results.append(result)

    def sample() -> None:  # the CPU reading at the measured start; VmRSS every second from then
        done.wait(max(0.0, measure_start - time.monotonic()))
        if done.is_set():
            return
        cpu_start.extend([cpu_seconds(pid), sum(os.times()[:2]), time.monotonic()])
        while not done.is_set():
            rss_now = vm_rss(pid)
            if rss_now:
                rss.append((time.monotonic() - measure_start, rss_now))
            done.wait(1.0)

    users = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(args.clients)]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for thread in users:
        thread.start()
    log(f"{args.clients} clients; warm-up {args.warmup:g}s, then "
        + (f"{args.per_client} questions each" if args.per_client is not None else f"{args.duration:g}s") + " measured")
    for thread in users:
        thread.join()
    done.set()
    sampler.join()
    cpu = None
    if cpu_start:
        wall = time.monotonic() - cpu_start[2]
        cpu = {"server_cores": round((cpu_seconds(pid) - cpu_start[0]) / wall, 2),
               "load_generator_cores": round((sum(os.times()[:2]) - cpu_start[1]) / wall, 2)}
    for r in results:
        r.started -= args.warmup  # measured time starts at 0
    return Measured(results, cpu, rss, args.warmup)


def measure_mode(args, parallel: int | None, model_path: Path | None, questions: list[Question],
                 sources: dict[str, tuple[str, ...]]) -> tuple[dict, dict[str, set[str]]]:
    """One fresh server with RAG_LLM_PARALLEL=parallel (unset for None), loaded; its summary and texts."""
    from rag.config import Settings

    extra = {} if parallel is None else {"RAG_LLM_PARALLEL": str(parallel)}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_load_openai_") as tmp:
        server = Server(Path(tmp))
        try:
            log(f"starting `rag serve` on {server.url} ({args.generator}, {setting_name(parallel)})")
            started = time.monotonic()
            # A server that starts without an index reads the corpus state only at the first question.
            server.start(args.generator, model_path, extra, index_first=args.generator == "llamacpp")
            server.wait_until_ready(Settings(_env_file=None, seeds_dir=server.seeds, index_dir=server.index))
            state = {"waited": False}
            if args.generator == "llamacpp" and not args.no_wait_state:
                state = {"waited": True, "saved": False, "seconds": None}
                try:
                    path, waited = wait_for_state(server.index, args.state_timeout,
                                                  alive=lambda: server.process.poll() is None)
                    state.update(saved=True, file=path.name, seconds=round(waited, 1),
                                 since_server_start_s=round(time.monotonic() - started, 1))
                    log(f"corpus state saved after {waited:.1f}s ({path.name})")
                except TimeoutError as exc:
                    log(f"{exc}; measuring anyway (answers from the windowed prompt)")
                    state["seconds"] = args.state_timeout
            watching = threading.Event()
            watcher = None
            if args.generator == "llamacpp" and not state["waited"]:  # is it read while the clients ask?
                state.update(read_under_load=True, saved_after_s=None)
                watcher = threading.Thread(target=watch_state, args=(server.index, state, watching), daemon=True)
                watcher.start()
            measured = run(args, server, questions)
            watching.set()
            if watcher is not None:
                watcher.join()
            died = server.process.poll() is not None
            if died:
                log(f"the server died during the run:\n{server.log_tail()}")
        finally:
            server.stop()
    summary = mode_summary(parallel, measured, questions, sources, state=state, server_died=died,
                           load_start=load_start)
    return summary, answer_texts(measured.results)


# -- the report (pure) ---------------------------------------------------------------------------
def watch_state(index_dir: Path, state: dict, done: threading.Event) -> None:
    """Record in `state` when the corpus state is saved, in seconds after the clients started."""
    started = time.monotonic()
    while not done.wait(1.0):
        if saved_state(index_dir) is not None:
            state["saved_after_s"] = round(time.monotonic() - started, 1)
            return


def saved_under_load(state: dict) -> str:
    if not state.get("read_under_load"):
        return "not read under load"
    return "NOT saved" if state["saved_after_s"] is None else f"after {state['saved_after_s']:g}s"


def after_state(after: dict | None) -> str:
    if after is None:
        return "-"
    return f"{after['requests']} / {_cell(after['latency_s']['p50'], after['latency_s']['p95'])} / {after['throughput_rps']}"


def setting_name(parallel: int | None) -> str:
    return "server default" if parallel is None else f"RAG_LLM_PARALLEL={parallel}"


def _latency(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": round(percentile(values, 50, NEAREST_RANK), 3),
            "p95": round(percentile(values, 95, NEAREST_RANK), 3),
            "max": round(max(values), 3)}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def quality(ok: list[Result], questions: list[Question], sources: dict[str, tuple[str, ...]]) -> dict:
    """Answer quality over successful answers: shares are of the answerable questions' answers
    (a refusal counts as neither citing the gold source nor holding the keywords)."""
    unanswerable = {q.id for q in questions if q.unanswerable}
    answerable = [r for r in ok if r.question not in unanswerable]
    with_gold = [r for r in answerable if sources.get(r.question)]
    gold = sum(1 for r in with_gold if set(r.cited) & set(sources[r.question]))
    keywords = sum(1 for r in answerable if r.keywords_ok)
    asked_unanswerable = [r for r in ok if r.question in unanswerable]
    return {
        "answerable": len(answerable),
        "gold_source_cited": gold,
        "gold_source_cited_share": _share(gold, len(with_gold)),
        "expected_keywords": keywords,
        "expected_keywords_share": _share(keywords, len(answerable)),
        "answerable_refused": sum(r.refused for r in answerable),
        "unanswerable": len(asked_unanswerable),
        "unanswerable_answered": sum(not r.refused for r in asked_unanswerable),
        "streamed": sum(r.streamed for r in ok),
        "streamed_then_corrected": sum(r.rewritten for r in ok),
        "citations": sum(r.citations for r in ok),
    }


def rss_summary(samples: list[tuple[float, int]], end: float, window: float = RSS_WINDOW) -> dict:
    """Medians of the first and last `window` seconds of the measured window [0, end], in MB."""
    first = [b for t, b in samples if 0 <= t <= window]
    last = [b for t, b in samples if end - window <= t <= end]
    first_mb = round(statistics.median(first) / 2**20, 1) if first else None
    last_mb = round(statistics.median(last) / 2**20, 1) if last else None
    growth = round((last_mb - first_mb) / first_mb * 100, 2) if first_mb and last_mb is not None else None
    return {"first_window_mb": first_mb, "last_window_mb": last_mb, "growth_pct": growth, "window_s": window,
            "samples": sum(1 for t, _ in samples if 0 <= t <= end)}


def mode_summary(parallel: int | None, measured: Measured, questions: list[Question],
                 sources: dict[str, tuple[str, ...]], *, state: dict, server_died: bool = False,
                 load_start: tuple[float, ...] = (0.0, 0.0, 0.0)) -> dict:
    """One mode's figures: latencies, answers/s, quality, memory and CPU of its server."""
    results = measured.results
    in_window = [r for r in results if r.phase == "measured"]
    ok = [r for r in in_window if r.error is None]
    errors = [r for r in results if r.error is not None]
    span = max((r.started + r.latency for r in in_window), default=0.0)
    summary = {
        "parallel": parallel,
        "setting": setting_name(parallel),
        "corpus_state": state,
        "requests": len(in_window),
        "warmup_requests": len(results) - len(in_window),
        "errors": len(errors),
        "error_samples": [f"{r.phase} {r.question}: {r.error}" for r in errors[:10]],
        "latency_s": _latency([r.latency for r in ok]),
        "latency_streamed_s": _latency([r.latency for r in ok if r.streamed]),
        "latency_complete_s": _latency([r.latency for r in ok if not r.streamed]),
        "first_text_s": _latency([r.first_token for r in ok if r.first_token is not None]),
        "server_time_s": None,  # SERVER_TIME_NOTE
        "throughput_rps": round(len(ok) / span, 3) if span > 0 else None,
        "measured_span_s": round(span, 1),
        "answers": quality(ok, questions, sources),
        "rss": rss_summary(measured.rss, span),
        "cpu_use": measured.cpu,
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "server_died": server_died,
    }
    saved = state.get("saved_after_s")
    if saved is not None:  # the answers asked after the state was saved while the clients asked
        after = [r for r in ok if r.started >= saved - measured.warmup]
        rest = span - max(0.0, saved - measured.warmup)
        summary["after_state"] = {"requests": len(after), "latency_s": _latency([r.latency for r in after]),
                                  "throughput_rps": round(len(after) / rest, 3) if after and rest > 0 else None}
    state_ok = not state.get("waited") or bool(state.get("saved"))
    summary["passed"] = not errors and bool(ok) and state_ok and not server_died
    return summary


def answer_texts(results: list[Result]) -> dict[str, set[str]]:
    """Question id -> the distinct checked texts of its measured, successful answers."""
    texts: dict[str, set[str]] = {}
    for r in results:
        if r.phase == "measured" and r.error is None:
            texts.setdefault(r.question, set()).add(r.text)
    return texts


def same_answers(per_mode: list[dict[str, set[str]]]) -> dict | None:
    """Per question answered in every mode: whether every mode gave it the same text(s). None for one mode."""
    if len(per_mode) < 2:
        return None
    everywhere = sorted(set.intersection(*(set(m) for m in per_mode)))
    same = {q: all(m[q] == per_mode[0][q] for m in per_mode[1:]) for q in everywhere}
    return {
        "questions_compared": len(same),
        "questions_differing": sum(not s for s in same.values()),
        "same_by_question": same,
        "not_in_every_mode": sorted(set().union(*per_mode) - set(everywhere)),
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None


def ratios(modes: list[dict]) -> dict:
    """Each later mode against the first: answers/s (above 1: more) and p95 latencies (below 1: faster)."""
    base = modes[0]
    return {
        "against": base["setting"],
        "modes": [{
            "setting": m["setting"],
            "throughput": _ratio(m["throughput_rps"], base["throughput_rps"]),
            "latency_p95": _ratio(m["latency_s"]["p95"], base["latency_s"]["p95"]),
            "first_text_p95": _ratio(m["first_text_s"]["p95"], base["first_text_s"]["p95"]),
        } for m in modes[1:]],
    }


def report(run_info: dict, modes: list[dict], texts: list[dict[str, set[str]]]) -> dict:
    """The one JSON object: the run, each mode, the ratios, answer agreement and the machine."""
    return {
        "run": {**run_info, "server_time_per_answer": SERVER_TIME_NOTE},
        "modes": modes,
        "ratios": ratios(modes),
        "same_answers": same_answers(texts),
        "machine": {**machine(), "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "passed": all(m["passed"] for m in modes),
    }


def _cell(*values) -> str:
    return " / ".join("-" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _part(count: int, whole: int, share: float | None) -> str:
    return f"{count}/{whole}" + ("" if share is None else f" ({share:.0%})")


def human(s: dict) -> str:
    """The report as a side-by-side table, one column a mode."""
    run, modes = s["run"], s["modes"]
    measure = f"{run['per_client']} questions per client" if run["per_client"] is not None \
        else f"{run['duration_s']:g}s"
    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("corpus state wait s", lambda m: _cell(m["corpus_state"].get("seconds"))
         + ("" if m["corpus_state"].get("saved", True) else " NOT saved") if m["corpus_state"]["waited"]
         else "not waited"),
        ("corpus state saved under load", lambda m: saved_under_load(m["corpus_state"])),
        ("  after it: answers / p50 / p95 s / answers a second", lambda m: after_state(m.get("after_state"))),
        ("requests (+warm-up)", lambda m: f"{m['requests']} (+{m['warmup_requests']})"),
        ("errors", lambda m: str(m["errors"]) + (" server died" if m["server_died"] else "")),
        ("latency p50/p95/max s", lambda m: _cell(*m["latency_s"].values())),
        ("  streamed", lambda m: _cell(*m["latency_streamed_s"].values())),
        ("  complete", lambda m: _cell(*m["latency_complete_s"].values())),
        ("first text p50/p95 s", lambda m: _cell(m["first_text_s"]["p50"], m["first_text_s"]["p95"])),
        ("answers/s", lambda m: f"{_cell(m['throughput_rps'])} over {m['measured_span_s']:g}s"),
        ("gold source cited", lambda m: _part(m["answers"]["gold_source_cited"], m["answers"]["answerable"],
                                              m["answers"]["gold_source_cited_share"])),
        ("expected keywords", lambda m: _part(m["answers"]["expected_keywords"], m["answers"]["answerable"],
                                              m["answers"]["expected_keywords_share"])),
        ("answerable refused", lambda m: str(m["answers"]["answerable_refused"])),
        ("streams corrected at end", lambda m: f"{m['answers']['streamed_then_corrected']}/{m['answers']['streamed']}"),
        ("unanswerable answered", lambda m: f"{m['answers']['unanswerable_answered']}/{m['answers']['unanswerable']}"),
        ("RSS MB first/last 10s", lambda m: _cell(m["rss"]["first_window_mb"], m["rss"]["last_window_mb"])),
        ("RSS growth %", lambda m: _cell(m["rss"]["growth_pct"])),
        ("server CPU cores", lambda m: _cell(m["cpu_use"]["server_cores"]) if m["cpu_use"] else "-"),
        ("load generator cores", lambda m: _cell(m["cpu_use"]["load_generator_cores"]) if m["cpu_use"] else "-"),
    ]
    columns = [[m["setting"] for m in modes]] + [[fn(m) for m in modes] for _, fn in rows]
    labels = [""] + [label for label, _ in rows]
    widths = [max(len(col[i]) for col in columns) for i in range(len(modes))]
    lines = [f"OpenAI endpoint load test: generator {run['generator']}"
             + (f" ({run['model']})" if run["model"] else "")
             + f", {run['clients']} clients (streaming: {run['stream']}), {run['warmup_s']:g}s warm-up + {measure} measured"]
    lines += [f"  {label:<24}" + "  ".join(f"{cell:>{w}}" for cell, w in zip(col, widths)).rstrip()
              for label, col in zip(labels, columns)]
    for r in s["ratios"]["modes"]:
        lines.append(f"  {r['setting']} against {s['ratios']['against']}: answers/s x{_cell(r['throughput'])}, "
                     f"p95 latency x{_cell(r['latency_p95'])}, p95 first text x{_cell(r['first_text_p95'])}")
    same = s["same_answers"]
    if same is not None:
        differing = sorted(q for q, ok in same["same_by_question"].items() if not ok)
        lines.append(f"  answer texts: {same['questions_differing']} of {same['questions_compared']} questions differ "
                     f"between modes{': ' + ', '.join(differing) if differing else ''}"
                     + (f" ({len(same['not_in_every_mode'])} not answered in every mode)"
                        if same["not_in_every_mode"] else ""))
    lines.append(f"  server time per answer: {run['server_time_per_answer']}")
    lines.append(f"  machine: {s['machine']['cpu']}, {s['machine']['cores']} cores, {s['machine']['ram_gb']} GB")
    lines += [f"    {m['setting']}: {line}" for m in modes for line in m["error_samples"]]
    lines.append("PASSED" if s["passed"] else "FAILED")
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------
def parallel_values(text: str | None) -> list[int | None]:
    """`1,4` -> [1, 4]; nothing -> [None] (the server's own default)."""
    if not text:
        return [None]
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise ValueError("--parallel takes whole numbers of at least 1, like 1,4")
    return values


def gold_sources(path: Path) -> dict[str, tuple[str, ...]]:
    """Question id -> the dev set's source files for it."""
    return {r["id"]: tuple(r.get("sources", ())) for r in load_questions(path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", choices=("extractive", "llamacpp"), default="extractive")
    parser.add_argument("--model-path", type=Path, default=None, help="GGUF file for llamacpp")
    parser.add_argument("--parallel", default=None, metavar="N,M",
                        help="one server per value with RAG_LLM_PARALLEL=value, measured one after the other")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--per-client", type=int, default=None, metavar="N",
                        help="each client asks N measured questions, then stops (instead of --duration)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring")
    parser.add_argument("--stream", choices=("mixed", "on", "off"), default="mixed")
    parser.add_argument("--model", default="rag", help="model id to ask (see GET /v1/models)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    parser.add_argument("--no-wait-state", action="store_true",
                        help="llamacpp: start the warm-up without waiting for the corpus state")
    parser.add_argument("--state-timeout", type=float, default=STATE_TIMEOUT,
                        help="seconds to wait for the corpus state")
    parser.add_argument("--dev-set", type=Path, default=DEV_SET)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        values = parallel_values(args.parallel)
    except ValueError as exc:
        parser.error(str(exc))
    if args.per_client is not None and args.per_client < 1:
        parser.error("--per-client takes a number of at least 1")

    def interrupted(signum, frame):  # a `kill` ends the run like Ctrl+C: the server is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    questions = dev_questions(args.dev_set)
    sources = gold_sources(args.dev_set)
    model_path, model_note = choose_model(args.generator, args.model_path)
    modes, texts = [], []
    try:
        for value in values:
            summary, mode_texts = measure_mode(args, value, model_path, questions, sources)
            modes.append(summary)
            texts.append(mode_texts)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, TimeoutError) as exc:
        log(str(exc))
        return 2
    run_info = {"generator": args.generator, "model": model_note, "model_id": args.model, "clients": args.clients,
                "stream": args.stream, "warmup_s": args.warmup,
                "duration_s": args.duration if args.per_client is None else None, "per_client": args.per_client,
                "parallel": values, "questions": len(questions)}
    s = report(run_info, modes, texts)
    print(json.dumps(s, indent=2) if args.json else human(s))
    return 0 if s["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
