"""Bounded load test of the chat server: concurrent chat users against a real `rag serve`, loopback only.

    rag bench load --generator extractive        # human-readable summary
    rag bench load --generator llamacpp --json   # one JSON object

Starts `rag serve` on 127.0.0.1 over a copy of seeds/ in a temporary folder, then --clients threads,
each one chat session of `gradio_client.Client`, ask the answerable questions of the seeds dev set
plus one unanswerable, back to back: first for --warmup seconds (not timed), then for --duration
seconds. Requests still running at the end are waited for (up to --timeout each): with a slow
local model they queue, and count as slow, never as errors. Halfway through, a paragraph with a
unique marker is appended to one seed copy; the server's watcher re-indexes it, and the run checks
that every citation quotes its file as it was before or after the change and that the marker
question is answered from the new build. The server's RSS (with its children) is sampled every
second; growth compares the median of the 10 s after warm-up (and after the first finished answer)
with the median of the last 10 s. Exit status 1 when a request failed, RSS grew by 5% or more, or the rebuild check failed.

The chat's send event is registered with api_visibility="private", which gradio_client refuses to
call; this script enables that one endpoint on its own clients, so they drive the same event, with
the same inputs and outputs, as the browser does.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (DEV_SET, NEAREST_RANK, ROOT, anon_rss, cpu_seconds, free_port, load_questions, log,
                               percentile, tree_rss)

UNANSWERABLE = "Who won the 2022 FIFA World Cup?"  # used when the dev set has none
RSS_GROWTH_LIMIT = 5.0  # percent
RSS_WINDOW = 10.0  # seconds of samples whose median stands for "after warm-up" and "at the end"
SERVER_START_TIMEOUT = 180.0
REBUILD_TIMEOUT = 240.0
_TAG = re.compile(r"<[^>]+>")
_CARD = re.compile(
    r'<span class="rag-cite-file">(?P<file>.*?)</span><span class="rag-cite-lines">(?P<lines>.*?)</span>'
    r'(?P<unverified><span class="rag-unverified"[^>]*>.*?</span>)?<span class="rag-cite-quote">(?P<quote>.*?)</span>'
)
_LINES = re.compile(r"lines? (\d+)(?:–(\d+))?")


def squash(text: str) -> str:
    return " ".join(text.split())


# -- questions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    id: str
    text: str
    keywords: tuple[tuple[str, ...], ...] = ()
    unanswerable: bool = False


def dev_questions(path: Path) -> list[Question]:
    """The answerable questions of the dev set plus its first unanswerable one."""
    rows = load_questions(path)
    out = [
        Question(r["id"], r["question"], tuple(tuple(g) for g in r.get("keywords", [])))
        for r in rows if not r.get("unanswerable")
    ]
    extra = next((r for r in rows if r.get("unanswerable")), None)
    out.append(Question(extra["id"], extra["question"], unanswerable=True) if extra
               else Question("unanswerable", UNANSWERABLE, unanswerable=True))
    return out


# -- the server --------------------------------------------------------------------------------
class Server:
    """`rag serve` on a free loopback port, in its own process group so it can always be ended."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.seeds, self.index, self.log_path = workdir / "seeds", workdir / "index", workdir / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None

    def start(self, generator: str, model_path: Path | None, extra: dict[str, str] | None = None,
              *, index_first: bool = False) -> None:
        """Serve a fresh copy of seeds/. `index_first`: index it with `rag index` before the server
        starts, so its warm-up finds a build (and a local model starts reading the corpus state)."""
        shutil.copytree(ROOT / "seeds", self.seeds)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env.update(
            RAG_SEEDS_DIR=str(self.seeds), RAG_INDEX_DIR=str(self.index), RAG_GENERATOR=generator,
            RAG_HOST="127.0.0.1", RAG_PORT=str(self.port), RAG_WATCH="true",
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
        )
        if model_path is not None:
            env["RAG_LLM_MODEL_PATH"] = str(model_path)
        env.update(extra or {})
        rag = Path(sys.executable).with_name("rag")
        with self.log_path.open("wb") as out:
            # cwd=workdir: no .env of the repository is read.
            if index_first:
                try:
                    done = subprocess.run([str(rag), "index"], cwd=self.workdir, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, timeout=SERVER_START_TIMEOUT, check=False)
                except subprocess.TimeoutExpired:
                    raise TimeoutError(f"`rag index` took over {SERVER_START_TIMEOUT:.0f}s") from None
                if done.returncode != 0:
                    out.flush()
                    raise RuntimeError(f"`rag index` exited with {done.returncode}:\n{self.log_tail()}")
            self.process = subprocess.Popen(
                [str(rag), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_until_ready(self, settings) -> None:
        """Until the page answers and the watcher's first build is in place."""
        from rag.errors import RagError
        from rag.pipeline import index_status

        deadline = time.monotonic() + SERVER_START_TIMEOUT
        page = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`rag serve` exited with {self.process.returncode}:\n{self.log_tail()}")
            if not page:
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as response:
                        page = response.status == 200
                except (urllib.error.URLError, OSError):
                    pass
            if page:
                try:
                    index_status(settings)
                    return
                except RagError:
                    pass
            time.sleep(0.5)
        raise TimeoutError(f"`rag serve` was not ready within {SERVER_START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass


# -- one request through the chat's send event ------------------------------------------------
def send_endpoint(client) -> tuple[int, str]:
    """The fn_index of the event behind the Send button, and its API visibility.

    A private endpoint is enabled on this client only: the server runs it for any caller (the
    browser calls it), the flag only stops gradio_client from offering it.
    """
    send = next(c["id"] for c in client.config["components"] if c.get("props", {}).get("elem_id") == "send")
    for index, dependency in enumerate(client.config["dependencies"]):
        if any(target[0] == send for target in dependency["targets"]):
            fn_index = dependency.get("id", index)
            visibility = dependency.get("api_visibility", "public")
            client.endpoints[fn_index].is_valid = True
            return fn_index, visibility
    raise RuntimeError("the page has no event behind its Send button")


@dataclass
class Result:
    client: int
    question: str
    phase: str  # warmup, measured, probe
    started: float  # seconds since the run started
    latency: float
    error: str | None = None
    refused: bool = False
    generator: str = ""
    note: str = ""
    answer: str = ""
    keywords_ok: bool | None = None
    server_s: float | None = None  # the answer's own total time (details line): latency minus queueing
    # (file, first line, last line, quote, verified by the server) of each source card
    citations: list[tuple[str, int, int, str, bool]] = field(default_factory=list)


def read_outputs(result: Result, question: Question, outputs: object) -> None:
    """Fill `result` from the send event's final outputs; anything broken or mixed is an error."""
    from ui.state import message_text  # read as the chat's own handlers read a message

    values = outputs if isinstance(outputs, (list, tuple)) else (outputs,)
    chat = next((v for v in values if isinstance(v, list)), None)
    panel = next((v for v in values if isinstance(v, str) and "rag-panel-head" in v), "")
    if not chat or len(chat) < 2:
        result.error = f"no answer in the chat output: {str(outputs)[:200]}"
        return
    asked, final = html.unescape(message_text(chat[-2])), message_text(chat[-1])
    if squash(asked) != squash(question.text):
        result.error = f"mixed: the chat shows the question {asked[:80]!r}"
        return
    if "rag-error" in final:
        result.error = "error in the chat: " + squash(html.unescape(_TAG.sub(" ", final)))[:200]
        return
    if "rag-final" not in final or "rag-cursor" in final or "rag-thinking" in final:
        result.error = f"unfinished answer: {final[:200]}"
        return
    head = re.search(r"Sources for <q>(.*?)</q>", panel)
    if head is None or squash(html.unescape(head.group(1))) != squash(question.text):
        result.error = f"mixed: the sources panel is for {html.unescape(head.group(1))[:80]!r}" if head else \
            "no sources panel for this answer"
        return
    result.refused = "rag-refusal" in final
    generator = re.search(r'<span class="rag-generator">(.*?)</span>', final)
    result.generator = html.unescape(generator.group(1)) if generator else ""
    details = re.search(r'<div class="rag-details">(.*?)</div>', final, re.S)
    seconds = re.search(r"([\d.]+) s$", details.group(1).strip()) if details else None
    result.server_s = float(seconds.group(1)) if seconds else None
    note = re.search(r'<div class="rag-note">(.*?)</div>', final)
    result.note = html.unescape(note.group(1)) if note else ""
    body = re.search(r'<div class="rag-(?:answer|refusal) rag-final">(.*?)</div>', final, re.S)
    result.answer = squash(html.unescape(_TAG.sub(" ", body.group(1)))) if body else ""
    if not result.answer:
        result.error = f"empty answer: {final[:200]}"
        return
    for card in _CARD.finditer(panel):
        lines = _LINES.search(card.group("lines"))
        first = int(lines.group(1)) if lines else 0
        last = int(lines.group(2) or first) if lines else 0
        quote = html.unescape(card.group("quote"))
        result.citations.append((html.unescape(card.group("file")), first, last, quote, not card.group("unverified")))
    if not question.unanswerable and not result.refused:
        text = result.answer.lower()
        result.keywords_ok = all(any(k.lower() in text for k in group) for group in question.keywords)


def ask(client, fn_index: int, generator: str, top_k: int, question: Question, timeout: float,
        client_id: int, phase: str, t0: float) -> Result:
    started = time.monotonic()
    result = Result(client_id, question.id, phase, started - t0, 0.0)
    job = None
    try:
        # Inputs of the send event: question, chat, (turns state: filled in by the client), generator, top-k.
        job = client.submit(question.text, [], generator, top_k, fn_index=fn_index)
        outputs = job.result(timeout=timeout)
        result.latency = time.monotonic() - started
        read_outputs(result, question, outputs)
    except Exception as exc:  # every failure is a counted error, never a crash of the run
        result.latency = time.monotonic() - started
        result.error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        if job is not None:
            try:
                job.cancel()
            except Exception:  # noqa: BLE001
                pass
    return result


# -- the run -----------------------------------------------------------------------------------
class Run:
    def __init__(self, args, server: Server, settings, questions: list[Question]) -> None:
        self.args, self.server, self.settings, self.questions = args, server, settings, questions
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.stop_issuing = threading.Event()
        self.finished = threading.Event()
        self.rss: list[tuple[float, int]] = []
        self.anon: list[tuple[float, int]] = []  # the server's anonymous memory (heap), without mapped files
        self.cpu: list[float] = []  # server CPU s, own CPU s, clock: when the measured time starts
        self.t0 = time.monotonic()
        self.measure_start = self.t0 + args.warmup
        self.measure_end = self.measure_start + args.duration
        self.endpoint: tuple[int, str] | None = None
        self.rebuild: dict = {"triggered": False}
        self.texts_before: dict[str, str] = {}
        self.texts_after: dict[str, str] = {}

    def _client(self):
        from gradio_client import Client

        client = Client(self.server.url, verbose=False, httpx_kwargs={"timeout": self.args.timeout})
        endpoint = send_endpoint(client)
        self.endpoint = self.endpoint or endpoint
        return client, endpoint[0]

    def user(self, number: int) -> None:
        """One chat session asking the questions in turn (each starting at a different one)."""
        try:
            client, fn_index = self._client()
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                self.results.append(Result(number, "-", "warmup", time.monotonic() - self.t0, 0.0,
                                           error=f"client could not connect: {exc}"[:300]))
            return
        turn = number
        while not self.stop_issuing.is_set() and time.monotonic() < self.measure_end:
            question = self.questions[turn % len(self.questions)]
            turn += 1
            phase = "warmup" if time.monotonic() < self.measure_start else "measured"
            result = ask(client, fn_index, self.args.generator, self.settings.top_k, question,
                         self.args.timeout, number, phase, self.t0)
            with self.lock:
                self.results.append(result)

    def sample_rss(self) -> None:
        while not self.finished.is_set():
            if not self.cpu and time.monotonic() >= self.measure_start:
                self.cpu = [cpu_seconds(self.server.process.pid), sum(os.times()[:2]), time.monotonic()]
            now = time.monotonic() - self.t0
            self.rss.append((now, tree_rss(self.server.process.pid)))
            self.anon.append((now, anon_rss(self.server.process.pid)))
            self.finished.wait(1.0)

    def trigger_rebuild(self) -> None:
        """At half the measured time: append a marker paragraph, wait for the new build, ask about it."""
        from rag.errors import RagError
        from rag.pipeline import index_status

        wait = self.measure_start + self.args.duration / 2 - time.monotonic()
        if self.stop_issuing.wait(max(0.0, wait)):
            return
        target = sorted(p for p in self.server.seeds.iterdir() if p.suffix == ".txt")[-1]
        codename = f"Zorvath-{secrets.token_hex(3)}"
        paragraph = (f"\n\nThe {codename} observatory in Patagonia catalogued 4,812 comets "
                     "during the winter of 2031.\n")
        before = index_status(self.settings).built_at
        with target.open("a", encoding="utf-8") as fh:
            fh.write(paragraph)
        changed_at = time.monotonic()
        self.texts_after = self.read_texts()
        self.rebuild.update(triggered=True, file=target.name, marker=codename,
                            appended_at_s=round(changed_at - self.t0, 1), built_at_before=before.isoformat())
        log(f"rebuild: appended a paragraph about {codename} to {target.name}")
        after = None
        while time.monotonic() - changed_at < REBUILD_TIMEOUT and not self.stop_issuing.is_set():
            try:
                status = index_status(self.settings)
            except RagError:
                status = None
            if status is not None and status.built_at != before:
                after = status.built_at
                break
            time.sleep(0.5)
        if after is None:
            self.rebuild.update(rebuilt=False, error=f"no new build within {REBUILD_TIMEOUT:.0f}s")
            log("rebuild: no new build appeared")
            return
        seen = time.monotonic()
        self.rebuild.update(rebuilt=True, built_at_after=after.isoformat(),
                            new_build_seen_at_s=round(seen - self.t0, 1),
                            seconds_to_new_build=round(seen - changed_at, 1))
        log(f"rebuild: new build in place after {seen - changed_at:.1f}s; asking about the marker")
        probe = Question("marker", f"How many comets did the {codename} observatory catalogue?",
                         keywords=((codename, "4,812", "4812"),))
        try:
            client, fn_index = self._client()
            result = ask(client, fn_index, self.args.generator, self.settings.top_k, probe,
                         self.args.timeout, -1, "probe", self.t0)
        except Exception as exc:  # noqa: BLE001
            result = Result(-1, probe.id, "probe", 0.0, 0.0, error=f"{type(exc).__name__}: {exc}"[:300])
        with self.lock:
            self.results.append(result)
        cited = any(f == target.name and codename in q for f, _, _, q, _ in result.citations)
        found = result.error is None and (bool(result.keywords_ok) or cited)
        self.rebuild["probe"] = {
            "ok": found, "latency_s": round(result.latency, 1), "refused": result.refused,
            "cites_marker": cited, "answer": result.answer[:240], "error": result.error,
        }

    def read_texts(self) -> dict[str, str]:
        from rag.errors import RagError
        from rag.loaders import document_text

        texts = {}
        for path in sorted(self.server.seeds.iterdir()):
            try:
                texts[path.name] = document_text(self.server.seeds, path.name)
            except RagError:
                pass
        return texts

    def check_citations(self) -> tuple[int, list[str]]:
        """Each cited quote must sit at its lines in the file as it was before or after the change."""
        checked, failures = 0, []
        for result in self.results:
            for source, first, last, quote, server_ok in result.citations:
                checked += 1
                prefix = squash(quote.removesuffix("…"))
                versions = [t[source] for t in (self.texts_before, self.texts_after) if source in t]
                here = any(prefix in squash("\n".join(text.split("\n")[first - 1 : last])) for text in versions)
                if not (server_ok and here and prefix):
                    why = "marked unverified by the server" if not server_ok else "quote not at those lines"
                    failures.append(f"{result.question}: [{source}:{first}-{last}] {why}: {quote[:80]!r}")
        return checked, failures

    def execute(self) -> None:
        self.texts_before = self.read_texts()
        sampler = threading.Thread(target=self.sample_rss, daemon=True, name="rss")
        sampler.start()
        users = [threading.Thread(target=self.user, args=(n,), daemon=True, name=f"user-{n}")
                 for n in range(self.args.clients)]
        for thread in users:
            thread.start()
        rebuild = threading.Thread(target=self.trigger_rebuild, daemon=True, name="rebuild")
        rebuild.start()
        log(f"warm-up for {self.args.warmup:g}s with {self.args.clients} clients")
        time.sleep(max(0.0, self.measure_start - time.monotonic()))
        log(f"measuring for {self.args.duration:g}s")
        time.sleep(max(0.0, self.measure_end - time.monotonic()))
        busy = sum(t.is_alive() for t in users)
        log(f"time is up; waiting for {busy} request(s) still running (up to {self.args.timeout:g}s each)")
        for thread in users:
            thread.join()
        rebuild.join(timeout=self.args.timeout + REBUILD_TIMEOUT)
        self.stop_issuing.set()
        time.sleep(1.0)  # one more RSS sample with nothing running
        self.finished.set()
        sampler.join()
        if self.cpu:
            wall = time.monotonic() - self.cpu[2]
            self.cpu_used = {
                "server_cores": round((cpu_seconds(self.server.process.pid) - self.cpu[0]) / wall, 2),
                "load_generator_cores": round((sum(os.times()[:2]) - self.cpu[1]) / wall, 2),
            }

    @staticmethod
    def window(series: list[tuple[float, int]], start: float, end: float) -> int:
        """Median of the samples taken between two moments (seconds since the start).

        One sample swings by 100 MB with the answer in progress; ten seconds' median does not.
        """
        values = sorted(v for t, v in series if start <= t <= end) or [series[-1][1]]
        return values[len(values) // 2]

    def report(self, model_note: str | None, load_start: tuple[float, ...]) -> dict:
        done = [r for r in self.results if r.phase != "probe"]
        measured = [r for r in done if r.phase == "measured"]
        ok = [r for r in measured if r.error is None]
        errors = [r for r in self.results if r.error is not None]
        latencies = [r.latency for r in ok]
        own = [r.server_s for r in ok if r.server_s is not None]
        span = max((r.started + r.latency for r in measured), default=0.0) - self.args.warmup
        warm = [r.latency for r in done if r.phase == "warmup" and r.error is None]
        checked, citation_failures = self.check_citations()
        last = self.rss[-1][0] if self.rss else 0.0
        # The baseline waits for the first finished answer too: a slow model may not finish one during
        # the warm-up, and the first answer's one-off allocations (~180 MB with llamacpp) are no growth.
        first_answer = min((r.started + r.latency for r in self.results if r.error is None), default=0.0)
        baseline_at = max(self.args.warmup, first_answer)
        rss_start = self.window(self.rss, baseline_at, baseline_at + RSS_WINDOW) if self.rss else 0
        rss_end = self.window(self.rss, last - RSS_WINDOW, last) if self.rss else 0
        anon_start = self.window(self.anon, baseline_at, baseline_at + RSS_WINDOW) if self.anon else 0
        anon_end = self.window(self.anon, last - RSS_WINDOW, last) if self.anon else 0
        growth = (rss_end - rss_start) / rss_start * 100 if rss_start else float("nan")
        probe = self.rebuild.get("probe", {})
        rebuild_ok = bool(self.rebuild.get("rebuilt") and probe.get("ok") and not citation_failures)
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        during = [r for r in measured if self.rebuild.get("appended_at_s") is not None
                  and r.started <= self.rebuild.get("new_build_seen_at_s", float("inf"))
                  and r.started + r.latency >= self.rebuild["appended_at_s"]]
        summary = {
            "generator": self.args.generator,
            "settings": dict(item.split("=", 1) for item in self.args.set),
            "model": model_note,
            "clients": self.args.clients,
            "warmup_s": self.args.warmup,
            "duration_s": self.args.duration,
            "client_timeout_s": self.args.timeout,
            "endpoint": {"fn_index": self.endpoint[0], "api_visibility": self.endpoint[1]} if self.endpoint else None,
            "requests": len(measured),
            "errors": len(errors),
            "error_samples": [f"{r.phase} {r.question}: {r.error}" for r in errors[:10]],
            "latency_s": {
                "p50": round(percentile(latencies, 50, NEAREST_RANK), 3) if latencies else None,
                "p95": round(percentile(latencies, 95, NEAREST_RANK), 3) if latencies else None,
                "max": round(max(latencies), 3) if latencies else None,
                "mean": round(sum(latencies) / len(latencies), 3) if latencies else None,
            },
            "answer_time_s": {  # the server's own time per answer, without the queue
                "p50": round(percentile(own, 50, NEAREST_RANK), 3) if own else None,
                "p95": round(percentile(own, 95, NEAREST_RANK), 3) if own else None,
                "max": round(max(own), 3) if own else None,
            },
            "throughput_rps": round(len(ok) / span, 3) if span > 0 else None,
            "measured_span_s": round(span, 1),
            "warmup_requests": {"completed": len(warm),
                                "p50_latency_s": round(percentile(warm, 50, NEAREST_RANK), 1) if warm else None,
                                "max_latency_s": round(max(warm), 1) if warm else None},
            "answers": {
                "refused": sum(r.refused for r in ok),
                "unanswerable_answered": sum(1 for r in ok if r.question == self.questions[-1].id and not r.refused),
                "answerable_refused": sum(1 for r in ok if r.question != self.questions[-1].id and r.refused),
                "missing_expected_keywords": sum(1 for r in ok if r.keywords_ok is False),
                "missing_keywords_by_question": dict(sorted(
                    Counter(r.question for r in ok if r.keywords_ok is False).items())),
                "with_note": sum(bool(r.note) for r in ok),
                "note_samples": sorted({r.note for r in ok if r.note})[:5],
                "generators": sorted({r.generator for r in ok}),
            },
            "rss_mb": {
                "after_warmup": mb(rss_start), "end": mb(rss_end), "window_s": RSS_WINDOW,
                "baseline_at_s": round(baseline_at, 1),
                "first_sample_after_warmup": mb(next((b for t, b in self.rss if t >= self.args.warmup), 0)),
                "last_sample": mb(self.rss[-1][1]) if self.rss else 0,
                "peak": mb(max((b for _, b in self.rss), default=0)),
                "anon_after_warmup": mb(anon_start), "anon_end": mb(anon_end),
                "growth_pct": round(growth, 2), "ok": growth < RSS_GROWTH_LIMIT, "samples": len(self.rss),
                "trace": [[round(t), mb(b)] for t, b in self.rss[::10]],  # every 10th one-second sample
            },
            "rebuild": {
                **self.rebuild,
                "requests_overlapping_rebuild": len(during),
                "citations_checked": checked,
                "citation_failures": len(citation_failures),
                "citation_failure_samples": citation_failures[:10],
                "ok": rebuild_ok,
            },
            "load_average": {"start": [round(x, 2) for x in load_start],
                             "end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()},
            # average cores busy from the end of warm-up to the end of the run
            "cpu_use": getattr(self, "cpu_used", None),
        }
        summary["passed"] = not errors and summary["rss_mb"]["ok"] and rebuild_ok
        return summary


def _thin(points: list, most: int) -> list:
    """At most `most` evenly spaced points, the last one always included."""
    step = max(1, -(-len(points) // most))
    return points[::step] + ([points[-1]] if points and (len(points) - 1) % step else [])


def human(s: dict) -> str:
    lat, rss, rb, ans = s["latency_s"], s["rss_mb"], s["rebuild"], s["answers"]
    probe = rb.get("probe", {})
    lines = [
        f"Load test: {s['clients']} clients, generator {s['generator']}"
        + (f" ({s['model']})" if s["model"] else "")
        + f", {s['warmup_s']:g}s warm-up + {s['duration_s']:g}s measured (client timeout {s['client_timeout_s']:g}s)",
        f"  endpoint        send event, fn_index {s['endpoint']['fn_index']} ({s['endpoint']['api_visibility']})"
        if s["endpoint"] else "  endpoint        none reached",
        f"  requests        {s['requests']} measured (+{s['warmup_requests']['completed']} in warm-up, "
        f"p50 {s['warmup_requests']['p50_latency_s']} s, max {s['warmup_requests']['max_latency_s']} s), "
        f"{s['errors']} errors",
        f"  latency         p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s, mean {lat['mean']} s",
        f"  answer time     p50 {s['answer_time_s']['p50']} s, p95 {s['answer_time_s']['p95']} s, "
        f"max {s['answer_time_s']['max']} s (server side, without queueing)",
        f"  throughput      {s['throughput_rps']} answers/s over {s['measured_span_s']} s "
        "(from the end of warm-up to the last measured answer)",
        f"  answers         {ans['refused']} refused ({ans['unanswerable_answered']} unanswerable answered, "
        f"{ans['answerable_refused']} answerable refused), {ans['missing_expected_keywords']} without the "
        f"expected keywords {ans['missing_keywords_by_question'] or ''}, {ans['with_note']} with a note; "
        f"generators: {', '.join(ans['generators'])}",
        f"  server RSS      {rss['after_warmup']} MB after warm-up (from {rss['baseline_at_s']} s), {rss['end']} MB "
        f"at the end (medians of {rss['window_s']:g} s; first sample after warm-up {rss['first_sample_after_warmup']}, "
        f"last {rss['last_sample']}), "
        f"peak {rss['peak']} MB; anonymous {rss['anon_after_warmup']} -> {rss['anon_end']} MB: "
        f"growth {rss['growth_pct']}% ({'ok' if rss['ok'] else 'NOT ok'}, limit {RSS_GROWTH_LIMIT:g}%)",
        "  RSS trace       " + ", ".join(f"{t}s {m:.0f}" for t, m in _thin(rss["trace"], 16)) + " (MB)",
    ]
    if rb.get("triggered"):
        lines.append(
            f"  rebuild         {rb['file']} changed at {rb['appended_at_s']} s; "
            + (f"new build seen {rb['seconds_to_new_build']} s later ({rb['built_at_before']} -> "
               f"{rb['built_at_after']})" if rb.get("rebuilt") else f"NO new build: {rb.get('error')}")
        )
        lines.append(
            f"                  marker question: {'found' if probe.get('ok') else 'NOT found'}"
            + (f" in {probe['latency_s']} s" if probe else "")
            + (f"; error {probe['error']}" if probe.get("error") else "")
        )
        lines.append(f"                  {rb['requests_overlapping_rebuild']} requests overlapped the rebuild; "
                     f"{rb['citations_checked']} citations checked, {rb['citation_failures']} failed")
    else:
        lines.append("  rebuild         not triggered")
    lines += [f"    {line}" for line in s["error_samples"] + rb.get("citation_failure_samples", [])]
    lines += machine_lines(s)
    lines.append("PASSED" if s["passed"] else "FAILED")
    return "\n".join(lines)


def machine_lines(s: dict) -> list[str]:
    """The summary's lines on the machine: load average and the CPU each side used."""
    lines = [f"  load average    {s['load_average']['start']} at start, {s['load_average']['end']} at end "
             f"({s['load_average']['cpus']} CPUs)"]
    if s["cpu_use"]:
        lines.append(f"  CPU use         server {s['cpu_use']['server_cores']} cores, this load generator "
                     f"{s['cpu_use']['load_generator_cores']} cores (average after warm-up)")
    return lines


def choose_model(generator: str, given: Path | None) -> tuple[Path | None, str | None]:
    """The GGUF file for llamacpp: --model-path, else the packaged default, else the small test model."""
    if generator != "llamacpp":
        return None, None
    from rag.models import DEFAULT_LLM, default_llm_path, small_llm_path

    if given is not None:
        return given, f"{given.name}, from --model-path"
    default = default_llm_path()
    if default is not None:
        return default, f"{DEFAULT_LLM.name}, the default local model"
    small = small_llm_path()
    if small is not None:
        log(f"{DEFAULT_LLM.name} is not installed ({DEFAULT_LLM.install_hint}); using {small.name} instead")
        return small, f"{small.name}: the default model is not installed, figures are for the small test model"
    raise SystemExit(f"no local model: run {DEFAULT_LLM.install_hint}, or pass --model-path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="extractive", choices=("extractive", "llamacpp"))
    parser.add_argument("--model-path", type=Path, default=None, help="GGUF file for llamacpp")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=120.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before measuring")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one request may take, queueing included (default: enough for every "
                             "client's answer ahead of it to use the whole RAG_ANSWER_DEADLINE, at least 600)")
    parser.add_argument("--dev-set", type=Path, default=DEV_SET)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--set", action="append", default=[], metavar="RAG_NAME=VALUE",
                        help="a setting for the server (repeatable), e.g. RAG_PROMPT_CONTEXT=auto")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    if any(not key.startswith("RAG_") for key in extra):
        parser.error("--set takes RAG_NAME=VALUE")

    from rag.config import Settings

    def interrupted(signum, frame):  # a `kill` ends the run like Ctrl+C: the server is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    if args.timeout is None:
        # Answers run one at a time: a request may wait for one answer per other client and the probe.
        deadline = Settings.model_fields["answer_deadline"].default
        args.timeout = max(600.0, (args.clients + 1) * deadline + 60)

    questions = dev_questions(args.dev_set)
    model_path, model_note = choose_model(args.generator, args.model_path)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        server = Server(Path(tmp))
        try:
            log(f"starting `rag serve` on {server.url} ({args.generator})")
            server.start(args.generator, model_path, extra)
            # The server sees no RAG_* variables but these: neither may this side.
            settings = Settings(_env_file=None, seeds_dir=server.seeds, index_dir=server.index,
                                top_k=Settings.model_fields["top_k"].default)
            server.wait_until_ready(settings)
            run = Run(args, server, settings, questions)
            run.execute()
            if server.process.poll() is not None:
                log(f"the server died during the run:\n{server.log_tail()}")
            summary = run.report(model_note, load_start)
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
