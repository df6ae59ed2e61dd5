"""The first question in the browser right after `make run` built a new index: what the user sees, and when.

    rag bench first-question                  # markdown table
    rag bench first-question --json --runs 3  # one JSON object, the median of three runs

Each run is what a new user goes through: the seeds copied to a temporary folder, a new index
built there by `rag index` (no saved corpus state yet), `rag serve` started on a free port, and as
soon as it prints its address the page opened in headless Chromium (Debian's, through
Playwright), the first answerable question of the seeds dev set typed, and Enter pressed. The
chat's DOM is read every 0.1 s in the page, on the page's clock, from the keypress on:

- progress note: the answer's bubble says what is happening (the page's own "Question sent…",
                 then the server's "Searching the documents…", "Reading 4 passages…");
- server's note: the first note the server sent (what it is doing);
- first words:   the bubble shows text of the answer (or the final answer, if it came at once);
- whole answer:  the final message is shown (the stream finished, sources listed).

The server runs with the default settings of a new folder (every RAG_* variable of this shell is
dropped, no .env; `--env KEY=VALUE` adds one), and with timing probes
(benchmarks/first_question_trace.py; `--no-trace` runs the plain `rag serve`): each stage the
question passed through, the tokens the model read for it and what the background corpus reader
read meanwhile, in seconds from Enter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks import first_question_trace as trace
from benchmarks.common import DEV_SET, ROOT, child_env, cpu_seconds, free_port, load_questions, log, machine

CHROMIUM = Path("/usr/bin/chromium")
# The flags the page's end-to-end tests launch Debian's Chromium with (tests/ui_helpers.py).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGETS = {"progress_note_s": 1.0, "first_words_s": 6.0, "whole_answer_s": 12.0}
POLL_MS = 100

# Installed in the page before the question is typed: the Enter keypress time and every change
# of what the newest answer bubble shows, read every POLL_MS on the page's own clock.
WATCH_JS = """
(pollMs) => {
  const w = window;
  w.__firstQuestion = {enter: null, samples: []};
  const box = document.querySelector('#question textarea');
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && w.__firstQuestion.enter === null) w.__firstQuestion.enter = Date.now();
  }, true);
  const shown = () => {
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    const last = bots.length ? bots[bots.length - 1] : null;
    if (!last || !last.innerText.trim()) return {kind: 'nothing', text: ''};
    if (last.querySelector('.rag-final')) return {kind: 'final', text: last.innerText};
    if (last.querySelector('.rag-cursor')) return {kind: 'words', text: last.innerText.replace('▍', '').trim()};
    if (last.querySelector('.rag-thinking')) return {kind: 'note', text: last.innerText.trim()};
    return {kind: 'other', text: last.innerText};
  };
  setInterval(() => {
    const q = w.__firstQuestion;
    if (q.enter === null) return;
    const now = shown(), prev = q.samples[q.samples.length - 1];
    if (!prev || prev.kind !== now.kind || prev.text !== now.text) q.samples.push({t: Date.now(), ...now});
  }, pollMs);
}
"""


def rag_command() -> list[str]:
    """The `rag` console script of this Python, as `make run` calls it."""
    script = Path(sys.executable).with_name("rag")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from rag.cli import main; main()"]


def server_env(work: Path, extra: list[str]) -> dict[str, str]:
    env = {k: v for k, v in child_env().items() if not k.startswith("RAG_")}
    env.update(RAG_SEEDS_DIR=str(work / "seeds"), RAG_INDEX_DIR=str(work / "index"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


class Server:
    """`rag serve` as a subprocess; its output stamped with seconds since start into a log file."""

    def __init__(self, work: Path, env: dict[str, str], traced: bool) -> None:
        self.port = free_port()
        argv = ["serve", "--port", str(self.port)]
        self.trace_file = work / "trace.jsonl"
        command = ([sys.executable, "-c", "import sys; from benchmarks.first_question_trace import launch; "
                    "launch(sys.argv[1], sys.argv[2:])", str(self.trace_file), *argv]
                   if traced else [*rag_command(), *argv])
        self.log_path = work / "serve.log"
        self.started = time.monotonic()
        self.ready = threading.Event()
        self.url: str | None = None
        self.process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.log_path.open("w", encoding="utf-8") as out:
            for line in self.process.stdout:  # type: ignore[union-attr]
                out.write(f"{time.time():.3f} +{time.monotonic() - self.started:7.2f}s {line}")
                out.flush()
                if "Chat running on" in line:
                    self.url = line.split("Chat running on", 1)[1].split()[0]
                    self.ready.set()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start until the server printed its address or answered HTTP."""
        url = f"http://127.0.0.1:{self.port}/"
        deadline = self.started + timeout
        while not self.ready.is_set():
            if self.process.poll() is not None:
                raise SystemExit(f"`rag serve` exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"`rag serve` did not start within {timeout:.0f} s; see {self.log_path}")
            self.ready.wait(0.1)
        self.url = self.url or url
        return time.monotonic() - self.started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def cpu_snapshot(pid: int) -> tuple[float, float, list[int]]:
    """(now, the server's CPU seconds, the machine's /proc/stat jiffies: user..steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return time.monotonic(), cpu_seconds(pid), [int(f) for f in fields]


def cpu_share(before: tuple, after: tuple) -> dict:
    """Cores busy over a window: the server's, the whole machine's, and the hypervisor's steal."""
    seconds = after[0] - before[0]
    jiffies = [b - a for a, b in zip(before[2], after[2])]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = jiffies
    return {"seconds": round(seconds, 1), "server_cores": round((after[1] - before[1]) / seconds, 2),
            "machine_busy_cores": round((user + nice + system + irq + softirq) / tick / seconds, 2),
            "steal_cores": round(steal / tick / seconds, 2)}


def ask_in_browser(browser, url: str, question: str, *, type_delay_ms: float, timeout_s: float, pid: int) -> dict:
    """Open the page, type the question, press Enter; what the answer bubble showed and when."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    try:
        page = context.new_page()
        opened = time.monotonic()
        page.goto(url)
        page.wait_for_selector("#question textarea")
        page_s = time.monotonic() - opened
        page.evaluate(WATCH_JS, POLL_MS)
        box = page.locator("#question textarea")
        if type_delay_ms:
            box.press_sequentially(question, delay=type_delay_ms)
        else:
            box.fill(question)
        before = cpu_snapshot(pid)
        box.press("Enter")
        page.wait_for_function("() => window.__firstQuestion.samples.some(s => s.kind === 'final')",
                               timeout=timeout_s * 1000)
        cpu = cpu_share(before, cpu_snapshot(pid))
        seen = page.evaluate("() => window.__firstQuestion")
        final = page.locator("#chat .rag-final").last
        answer = final.inner_text()
        bubble = final.locator("xpath=..")
        sources = [s.inner_text() for s in bubble.locator(".rag-src").all()]
        details = bubble.locator(".rag-details").inner_text() if bubble.locator(".rag-details").count() else ""
    finally:
        context.close()
    return {"page_load_s": round(page_s, 2), "cpu_while_answering": cpu, "seen": seen, "answer": answer,
            "sources": sources, "details": details}


def first(samples: list[dict], enter: float, kinds: tuple[str, ...], *, server: bool = False) -> float | None:
    """Seconds from Enter until the answer's bubble first showed one of `kinds` (`server`: a
    note the server sent, not the one the page shows by itself when the question is sent)."""
    from ui.rendering import SENDING

    hit = next((s for s in samples if s["kind"] in kinds and (s["kind"] != "words" or s["text"])
                and not (server and s["text"].startswith(SENDING))), None)
    return round((hit["t"] - enter) / 1000, 2) if hit else None


def saved_answer(index_dir: Path) -> dict:
    """The answer as the server saved it (its own timings, who answered, notes)."""
    path = index_dir / "chats.sqlite3"
    if not path.is_file():
        return {}
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT answer FROM turns ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return {}
    answer = json.loads(row[0])
    return {k: answer.get(k) for k in ("generator", "mode", "refused", "decided_by", "notes", "timings")}


def one_run(args: argparse.Namespace, question: str) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="rag-first-question-"))
    shutil.copytree(ROOT / "seeds", work / "seeds")
    env = server_env(work, args.env)
    log(f"building a new index in {work}")
    started = time.monotonic()
    subprocess.run([*rag_command(), "index"], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    index_s = time.monotonic() - started
    load_before = os.getloadavg()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        server = Server(work, env, traced=not args.no_trace)
        try:
            ready_s = server.wait_ready(args.start_timeout)
            log(f"server ready after {ready_s:.1f} s on {server.url}; asking")
            shown = ask_in_browser(browser, server.url, question, type_delay_ms=args.type_delay_ms,
                                   timeout_s=args.answer_timeout, pid=server.process.pid)
        finally:
            server.stop()
            browser.close()
    seen = shown.pop("seen")
    enter, samples = seen["enter"], seen["samples"]
    done = next(s["t"] for s in samples if s["kind"] == "final")
    result = {
        "index_build_s": round(index_s, 1),
        "server_ready_s": round(ready_s, 1),
        "progress_note_s": first(samples, enter, ("note",)),
        "server_note_s": first(samples, enter, ("note", "words", "final"), server=True),
        "first_words_s": first(samples, enter, ("words", "final")),
        "whole_answer_s": first(samples, enter, ("final",)),
        "word_updates": sum(s["kind"] == "words" for s in samples),  # > 1: the words streamed in
        "timeline": [{"at_s": round((s["t"] - enter) / 1000, 2), "shows": s["kind"], "text": s["text"][:80]}
                     for s in samples],
        **shown,
        "server_answer": saved_answer(work / "index"),
        "load_average_before": [round(x, 2) for x in load_before],
        "trace": trace.summarize(trace.read(server.trace_file), enter / 1000, done / 1000) if not args.no_trace else None,
    }
    if args.keep:
        result["work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 2) if values else None


def print_markdown(report: dict) -> None:
    runs = report["runs"]
    print(f"First question after a new index: {report['question']!r}\n")
    print("| what | median | runs | target |")
    print("|---|---|---|---|")
    for key, label in (("progress_note_s", "progress note visible"), ("server_note_s", "the server's first note"),
                       ("first_words_s", "first words visible"),
                       ("whole_answer_s", "whole answer visible"), ("server_ready_s", "server ready after start"),
                       ("index_build_s", "`rag index` (new index)")):
        target = f"≤ {TARGETS[key]:g} s" if key in TARGETS else ""
        values = ", ".join("-" if r[key] is None else f"{r[key]}" for r in runs)
        print(f"| {label} | {report['median'][key]} s | {values} | {target} |")
    last = runs[-1]
    cpu = last["cpu_while_answering"]
    print(f"\nWhile answering (last run, {cpu['seconds']} s): the server used {cpu['server_cores']} cores, the "
          f"machine {cpu['machine_busy_cores']} of {report['machine']['cores']} (others: the rest), steal "
          f"{cpu['steal_cores']}")
    print(f"\nAnswer (last run, {last['word_updates']} streamed updates before the final one): {last['answer']!r}")
    print(f"Sources: {'; '.join(last['sources']) or 'none'}")
    print("\nWhat the page showed (last run, seconds from Enter):")
    for step in last["timeline"]:
        print(f"- {step['at_s']:6.2f} s  {step['shows']:8s} {step['text']!r}")
    if last["trace"]:
        t = last["trace"]
        piece = t["model_first_piece_s"]
        print(f"\nThe question reached the server's queue {t['question_reached_server_s']} s after Enter; "
              + ("no local model wrote." if piece is None else f"the model's first piece came at {piece} s."))
        print("\nStages of the question on the server (last run, seconds from Enter):")
        print("| stage | from | seconds | thread | |")
        print("|---|---|---|---|---|")
        for s in t["stages"]:
            more = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("stage", "from_s", "seconds", "thread"))
            seconds = "still running" if s["seconds"] is None else s["seconds"]
            print(f"| {s['stage']} | {s['from_s']} | {seconds} | {s['thread']} | {more} |")
        for name in ("answering_model", "background_reader"):
            m = t[name]
            reads = "; ".join(f"{r['tokens']} tokens in {r['seconds']} s from {r['from_s']} s" for r in m["prompt_reads"])
            print(f"\n{name.replace('_', ' ')}: read {m['tokens_read']} tokens ({reads or 'nothing'}), "
                  f"wrote {m['generated_tokens']} tokens in {m['generation_seconds']} s")
    print(f"\nMachine: {report['machine']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a markdown table")
    parser.add_argument("--runs", type=int, default=1, help="fresh folder, index and server each run (median reported)")
    parser.add_argument("--question-index", type=int, default=0, help="which answerable question of the dev set")
    parser.add_argument("--questions", type=Path, default=DEV_SET, help="question set (JSON lines)")
    parser.add_argument("--type-delay-ms", type=float, default=0.0,
                        help="type the question a key at a time with this delay (0: pasted at once, the worst case)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for `rag index` and `rag serve`, e.g. RAG_LOG_LEVEL=debug (repeatable)")
    parser.add_argument("--no-trace", action="store_true", help="run the plain `rag serve`, without timing probes")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (server log, trace)")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--answer-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (`make test` installs it)")
    answerable = [r for r in load_questions(args.questions) if r.get("sources")]
    question = answerable[args.question_index]["question"]
    runs = []
    for n in range(args.runs):
        log(f"run {n + 1} of {args.runs}")
        runs.append(one_run(args, question))
    keys = ("progress_note_s", "server_note_s", "first_words_s", "whole_answer_s", "server_ready_s", "index_build_s")
    report = {"question": question, "question_index": args.question_index, "targets": TARGETS,
              "median": {k: median(runs, k) for k in keys}, "runs": runs,
              "settings": args.env, "traced": not args.no_trace, "type_delay_ms": args.type_delay_ms,
              "machine": {**machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_markdown(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
