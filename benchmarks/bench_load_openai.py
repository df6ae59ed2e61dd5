"""Load test of the OpenAI-compatible endpoint: concurrent `openai` clients against a real `rag serve`.

    rag bench load-openai                    # 8 clients, 120 s, extractive
    rag bench load-openai --stream on --json

Starts `rag serve` on 127.0.0.1 over a copy of seeds/ (the `Server` of bench_load.py), waits for
its first index build, then --clients threads, each with its own `openai.OpenAI` client pointed
at `/v1`, ask the answerable questions of the seeds dev set plus one unanswerable, back to back:
--warmup seconds not timed, then --duration seconds measured. With `--stream mixed` (the
default) even-numbered clients stream and odd ones do not. Every answer is checked: a text, the
`citations` and `refused` fields present, each citation's quote found at its lines of the seed
file, the final streamed chunk's checked `text` equal to what was streamed. Exit status 1 on any
failed request or check.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_load import Question, Server, dev_questions, machine_lines, squash
from benchmarks.common import DEV_SET, NEAREST_RANK, cpu_seconds, log, percentile


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


def ask(client, model: str, question: Question, stream: bool, seeds: Path, result: Result) -> None:
    """One question through the endpoint; fills `result` (any failure is its error, never a crash)."""
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
            if squash(extra.get("text", "")) != squash(text):
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
        problem = check_citations(extra["citations"], seeds)
        if problem:
            raise ValueError(problem)
        if not question.unanswerable and not result.refused:
            low = text.lower()
            result.keywords_ok = all(any(k.lower() in low for k in group) for group in question.keywords)
    except Exception as exc:  # every failure is a counted error
        result.latency = result.latency or time.monotonic() - started
        result.error = f"{type(exc).__name__}: {exc}"[:300]


def run(args, server: Server, questions: list[Question]) -> tuple[list[Result], dict]:
    import openai

    results: list[Result] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    measure_start, measure_end = t0 + args.warmup, t0 + args.warmup + args.duration
    cpu_start: list[float] = []

    def user(number: int) -> None:
        client = openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0,
                               timeout=args.timeout)
        stream = {"on": True, "off": False}.get(args.stream, number % 2 == 0)
        turn = number
        while time.monotonic() < measure_end:
            question = questions[turn % len(questions)]
            turn += 1
            now = time.monotonic()
            result = Result(number, question.id, stream, "warmup" if now < measure_start else "measured", now - t0)
            ask(client, args.model, question, stream, server.seeds, result)
            with lock:
                results.append(result)

    def mark_cpu() -> None:
        time.sleep(max(0.0, measure_start - time.monotonic()))
        cpu_start.extend([cpu_seconds(server.process.pid), sum(os.times()[:2]), time.monotonic()])

    users = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(args.clients)]
    marker = threading.Thread(target=mark_cpu, daemon=True)
    marker.start()
    for thread in users:
        thread.start()
    log(f"{args.clients} clients; warm-up {args.warmup:g}s, then {args.duration:g}s measured")
    for thread in users:
        thread.join()
    marker.join()
    wall = time.monotonic() - cpu_start[2]
    cpu = {"server_cores": round((cpu_seconds(server.process.pid) - cpu_start[0]) / wall, 2),
           "load_generator_cores": round((sum(os.times()[:2]) - cpu_start[1]) / wall, 2)}
    for r in results:
        r.started -= args.warmup  # measured time starts at 0
    return results, cpu


def _latency(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": round(percentile(values, 50, NEAREST_RANK), 3),
            "p95": round(percentile(values, 95, NEAREST_RANK), 3),
            "max": round(max(values), 3)}


def report(args, results: list[Result], cpu: dict, load_start: tuple[float, ...], unanswerable: str) -> dict:
    measured = [r for r in results if r.phase == "measured"]
    ok = [r for r in measured if r.error is None]
    errors = [r for r in results if r.error is not None]
    span = max((r.started + r.latency for r in measured), default=0.0)
    summary = {
        "model": args.model,
        "clients": args.clients,
        "stream": args.stream,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "requests": len(measured),
        "warmup_requests": len(results) - len(measured),
        "errors": len(errors),
        "error_samples": [f"{r.phase} {r.question}: {r.error}" for r in errors[:10]],
        "latency_s": _latency([r.latency for r in ok]),
        "latency_streamed_s": _latency([r.latency for r in ok if r.streamed]),
        "latency_complete_s": _latency([r.latency for r in ok if not r.streamed]),
        "first_token_s": _latency([r.first_token for r in ok if r.first_token is not None]),
        "throughput_rps": round(len(ok) / span, 3) if span > 0 else None,
        "measured_span_s": round(span, 1),
        "answers": {
            "streamed": sum(r.streamed for r in ok),
            "refused": sum(r.refused for r in ok),
            "unanswerable_answered": sum(1 for r in ok if r.question == unanswerable and not r.refused),
            "answerable_refused": sum(1 for r in ok if r.question != unanswerable and r.refused),
            "missing_expected_keywords": sum(1 for r in ok if r.keywords_ok is False),
            "citations": sum(r.citations for r in ok),
        },
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()},
        "cpu_use": cpu,
    }
    summary["passed"] = not errors and bool(ok)
    return summary


def human(s: dict) -> str:
    lat, ans = s["latency_s"], s["answers"]
    lines = [
        f"OpenAI endpoint load test: {s['clients']} clients (streaming: {s['stream']}), model {s['model']}, "
        f"{s['warmup_s']:g}s warm-up + {s['duration_s']:g}s measured",
        f"  requests        {s['requests']} measured (+{s['warmup_requests']} in warm-up), {s['errors']} errors",
        f"  latency         p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s",
        f"    streamed      p50 {s['latency_streamed_s']['p50']} s, p95 {s['latency_streamed_s']['p95']} s; "
        f"first text p50 {s['first_token_s']['p50']} s, p95 {s['first_token_s']['p95']} s",
        f"    complete      p50 {s['latency_complete_s']['p50']} s, p95 {s['latency_complete_s']['p95']} s",
        f"  throughput      {s['throughput_rps']} answers/s over {s['measured_span_s']} s",
        f"  answers         {ans['streamed']} streamed, {ans['refused']} refused ({ans['unanswerable_answered']} "
        f"unanswerable answered, {ans['answerable_refused']} answerable refused), "
        f"{ans['missing_expected_keywords']} without the expected keywords, {ans['citations']} citations checked",
    ] + machine_lines(s)
    lines += [f"    {line}" for line in s["error_samples"]]
    lines.append("PASSED" if s["passed"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring")
    parser.add_argument("--stream", choices=("mixed", "on", "off"), default="mixed")
    parser.add_argument("--model", default="rag", help="model id to ask (see GET /v1/models)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    parser.add_argument("--dev-set", type=Path, default=DEV_SET)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from rag.config import Settings

    def interrupted(signum, frame):  # a `kill` ends the run like Ctrl+C: the server is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    questions = dev_questions(args.dev_set)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_load_openai_") as tmp:
        server = Server(Path(tmp))
        try:
            log(f"starting `rag serve` on {server.url} (extractive)")
            server.start("extractive", None)
            server.wait_until_ready(Settings(_env_file=None, seeds_dir=server.seeds, index_dir=server.index))
            results, cpu = run(args, server, questions)
            if server.process.poll() is not None:
                log(f"the server died during the run:\n{server.log_tail()}")
            summary = report(args, results, cpu, load_start, questions[-1].id)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except (RuntimeError, TimeoutError) as exc:
            log(str(exc))
            return 2
        finally:
            server.stop()
    print(json.dumps(summary, indent=2) if args.json else human(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
