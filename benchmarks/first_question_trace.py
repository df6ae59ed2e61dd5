"""Timing probes for `rag bench first-question`: where a served question's seconds go.

`launch(trace_file, argv)` wraps a few stage functions of the product (and llama.cpp's `eval`,
which reads a batch of tokens) so that each call writes one JSON line to `trace_file` (wall-clock
start, seconds, thread, what it read), then runs `rag` with `argv` as the console script does.
Nothing else changes: the wrappers call the real functions and add microseconds. `summarize`
turns the lines into the stages of one question, from the moment Enter was pressed.

Wall-clock time (`time.time()`) is used so that the browser's `Date.now()` and the server's
events share one clock on one machine.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_out: list = []  # [open file]
_write_lock = threading.Lock()
_engines: dict[int, str] = {}  # id(Llama) -> "shared" | "private"


def _emit(event: str, start: float, seconds: float, **fields: object) -> None:
    line = {"event": event, "t": start, "s": round(seconds, 4), "thread": threading.current_thread().name, **fields}
    with _write_lock:
        _out[0].write(json.dumps(line) + "\n")
        _out[0].flush()


def _span(owner: object, name: str, event: str, describe: Callable[[object], dict] | None = None) -> None:
    """Replace `owner.name` by a wrapper that records each call's start and duration."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start, clock = time.time(), time.perf_counter()
        _emit(f"{event}: start", start, 0.0)
        try:
            result = inner(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - clock
        _emit(event, start, seconds, **(describe(result) if describe else {}))
        return result

    setattr(owner, name, wrapper)


def _stream_span(owner: object, name: str, event: str, describe: Callable[[object], str]) -> None:
    """Replace a generator function by one that records its start, each piece's kind and its end."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs) -> Iterator:
        start, clock = time.time(), time.perf_counter()
        count = 0
        try:
            for item in inner(*args, **kwargs):
                count += 1
                _emit(f"{event}: yield", time.time(), 0.0, n=count, kind=describe(item))
                yield item
        finally:
            _emit(event, start, time.perf_counter() - clock, yields=count)

    setattr(owner, name, wrapper)


def _chat_kind(values: tuple) -> str:
    """What one yield of ChatHandlers.respond puts in the chat's last message."""
    from ui.handlers import RESPOND_OUTPUTS

    chat = values[RESPOND_OUTPUTS.index("chat")]
    if not isinstance(chat, list) or not chat:
        return "no chat change"
    content = str(chat[-1].get("content", ""))
    for mark, kind in (("rag-final", "final"), ("rag-cursor", "words"), ("rag-thinking", "note")):
        if mark in content:
            return kind
    return "other"


def _probe_llama(engine_load_result) -> None:
    """Wrap `Llama.eval` once llama_cpp is imported (by the first model load)."""
    import llama_cpp

    _engines[id(engine_load_result.llm)] = "shared" if engine_load_result.shared else "private"
    if getattr(llama_cpp.Llama.eval, "_traced", False):
        return
    inner = llama_cpp.Llama.eval

    def traced_eval(self, tokens):
        start, clock = time.time(), time.perf_counter()
        if len(tokens) > 1:  # a prompt: its start is recorded, so a read cut short still shows
            _emit("llama eval: start", start, 0.0, tokens=len(tokens), model=_engines.get(id(self), "?"))
        try:
            return inner(self, tokens)
        finally:
            _emit("llama eval", start, time.perf_counter() - clock, tokens=len(tokens),
                  model=_engines.get(id(self), "?"))

    traced_eval._traced = True  # type: ignore[attr-defined]
    llama_cpp.Llama.eval = traced_eval


def _probe_gradio_queue() -> None:
    """When the page's event reaches the server's queue, and when the queue starts it."""
    from gradio.queueing import Queue

    inner_push, inner_process = Queue.push, Queue.process_events

    async def push(self, *args, **kwargs):
        _emit("gradio queue: event arrived", time.time(), 0.0)
        return await inner_push(self, *args, **kwargs)

    async def process_events(self, *args, **kwargs):
        _emit("gradio queue: event started", time.time(), 0.0)
        return await inner_process(self, *args, **kwargs)

    Queue.push, Queue.process_events = push, process_events


def install(trace_file: Path) -> None:
    """Wrap the stages a first question passes through (see the module docstring)."""
    import rag.backends
    import rag.corpus_cache
    import rag.generation.llama_engine as llama_engine
    import rag.generation.llamacpp as llamacpp
    import rag.pipeline
    import rag.planning
    import ui.handlers

    _out.append(trace_file.open("a", encoding="utf-8"))
    _probe_gradio_queue()
    _span(rag.pipeline.Rag, "ask_stream", "ask_stream (until the stream is returned)")
    _span(rag.pipeline.Rag, "retrieve", "retrieve")
    _span(rag.pipeline, "select", "select")
    _span(rag.pipeline, "verdict", "decide")
    _span(rag.pipeline.Rag, "_finish", "assemble + verify")
    _span(rag.planning.ContextPlanner, "plan", "plan", lambda plan: {"context": plan.context})
    _span(rag.planning.ContextPlanner, "prepare", "warm-up: prepare the prompt start")
    _span(rag.planning, "prime", "warm-up: sentence vectors of the corpus")
    _span(rag.backends.Backends, "load", "warm-up: index, embedder and model weights")
    _span(rag.backends.Backends, "generator", "get the generator")
    _span(rag.backends, "get_embedder", "load the embedder")
    _span(rag.corpus_cache.CorpusCache, "_build", "corpus state read in the background")
    _span(llamacpp.LlamaCppGenerator, "warm", "model reads the system prompt (warm-up)")
    _span(llamacpp.LlamaCppGenerator, "preload", "model loads a saved corpus state")
    _span(llamacpp.LlamaCppGenerator, "_first_token", "model reads the prompt for one token (judge)")
    _stream_span(llamacpp.LlamaCppGenerator, "stream", "model writes the answer", lambda piece: "piece")
    _stream_span(ui.handlers.ChatHandlers, "respond", "page handler", _chat_kind)

    inner_load = llama_engine.load

    @functools.wraps(inner_load)
    def load(*args, **kwargs):
        start, clock = time.time(), time.perf_counter()
        engine = inner_load(*args, **kwargs)
        _probe_llama(engine)
        _emit("load the model (a context)", start, time.perf_counter() - clock, shared=engine.shared)
        return engine

    llama_engine.load = load
    llamacpp.llama_engine.load = load  # the same module object; kept explicit for the reader


def launch(trace_file: str, argv: list[str]) -> None:
    """Install the probes and run `rag` with `argv` (e.g. ["serve", "--port", "7860"])."""
    import sys

    install(Path(trace_file))
    from rag.cli import main

    sys.argv = ["rag", *argv]
    main()


# -- reading a trace -------------------------------------------------------------------------------
def read(trace_file: Path) -> list[dict]:
    if not trace_file.is_file():
        return []
    return [json.loads(line) for line in trace_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _spans(events: list[dict]) -> list[dict]:
    """Finished spans, point events, and spans still running when the server stopped (seconds None)."""
    ended = {(e["event"], e["thread"], e["t"]) for e in events}
    done = [e for e in events if not e["event"].endswith((": start", ": yield"))]
    running = [{**e, "event": e["event"][: -len(": start")], "s": None} for e in events
               if e["event"].endswith(": start") and (e["event"][: -len(": start")], e["thread"], e["t"]) not in ended]
    return sorted(done + running, key=lambda e: e["t"])


def _reads(evals: list[dict], enter: float) -> dict:
    """What one model context read (prompts: several tokens a call) and wrote (a token a call)."""
    prompts = [e for e in evals if e["tokens"] > 1]
    steps = [e for e in evals if e["tokens"] == 1 and e["s"] is not None]
    return {
        "prompt_reads": [{"from_s": round(e["t"] - enter, 2), "tokens": e["tokens"],
                          "seconds": None if e["s"] is None else round(e["s"], 2),
                          "tokens_per_s": round(e["tokens"] / e["s"], 1) if e["s"] else None,
                          "thread": e["thread"]} for e in prompts],
        "tokens_read": sum(e["tokens"] for e in prompts),
        "generated_tokens": len(steps),
        "generation_seconds": round(sum(e["s"] for e in steps), 2),
    }


def summarize(events: list[dict], enter: float, done: float) -> dict:
    """The first question's stages (seconds from Enter), and what the model read meanwhile."""
    spans = _spans(events)
    window = [e for e in spans if (done if e["s"] is None else e["t"] + e["s"]) >= enter and e["t"] <= done]
    stages = [{"stage": e["event"], "from_s": round(e["t"] - enter, 2),
               "seconds": None if e["s"] is None else round(e["s"], 2), "thread": e["thread"],
               **{k: v for k, v in e.items() if k not in ("event", "t", "s", "thread")}}
              for e in window if e["event"] != "llama eval" and not e["event"].startswith("gradio queue")]
    # Every event of the page goes through the queue (its timers too): the first after Enter is the question.
    arrived = [e["t"] for e in events if e["event"] == "gradio queue: event arrived" and e["t"] >= enter]
    evals = [e for e in window if e["event"] == "llama eval"]
    pieces = [e for e in events if e["event"] == "model writes the answer: yield" and enter <= e["t"] <= done]
    yields = [{"at_s": round(e["t"] - enter, 2), "what": e.get("kind")}
              for e in events if e["event"] == "page handler: yield" and enter <= e["t"] <= done]
    before = [e for e in spans if e["t"] < enter and e["event"] == "llama eval" and e["tokens"] > 1]
    return {
        "question_reached_server_s": round(arrived[0] - enter, 2) if arrived else None,
        "model_first_piece_s": round(pieces[0]["t"] - enter, 2) if pieces else None,
        "stages": stages,
        "page_handler_yields": yields,
        "answering_model": _reads([e for e in evals if e.get("model") == "shared"], enter),
        "background_reader": _reads([e for e in evals if e.get("model") == "private"], enter),
        "tokens_read_before_enter": {m: sum(e["tokens"] for e in before if e.get("model") == m)
                                     for m in ("shared", "private")},
    }
