"""The browser chat: a thin Gradio layer over the public `rag` API (parse input, call, show).

Everything retrieval- or prompt-related happens in `rag.pipeline.Rag`; this module only streams
answers into the page, renders citations and the passage viewer (all document text HTML-escaped),
and shows the index status. `serve()` adds the live re-indexing thread and the network safety
checks around `launch()`.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

# An offline product: no telemetry or update checks from Gradio (must be set before the import).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from rag.config import Settings  # noqa: E402
from rag.errors import QuestionError, RagError  # noqa: E402
from rag.pipeline import Rag  # noqa: E402
from rag.types import Answer, Citation, IndexReport, IndexStatus  # noqa: E402

log = logging.getLogger(__name__)

TITLE = "Ask your documents"
HISTORY_TURNS = 6  # earlier turns handed to Rag for rewriting follow-up questions
CONTEXT_LINES = 3  # lines shown around a cited range in the passage viewer
MAX_CITED_LINES = 80  # a citation spanning more lines is shown truncated
STATUS_REFRESH_SECONDS = 4.0
STREAM_FRAME_SECONDS = 0.04  # at most ~25 chat updates a second while streaming
VIEWER_HINT = "Click a source above to read it in context."

# The outputs of `ChatHandlers.respond`, in order (kept as names so tests can read the tuples).
RESPOND_OUTPUTS = ("question", "chat", "turns", "citations", "viewer", "generator_note", "send", "stop")
STOP_OUTPUTS = ("chat", "turns", "send", "stop")

_MARKER = re.compile(r"\[(\d{1,3})\]")
_CITE_KEY = re.compile(r"^(\d{1,6}):(\d{1,3})$")
_STREAMING = ("rag-cursor", "rag-thinking")


# -- state -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    """One answered question of a session, kept server-side for follow-ups and citations."""

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    refused: bool = False
    msg: int = -1  # index of the assistant message in the chat
    generator: str = ""


class Activity:
    """What happens behind the page (watch rebuilds, warm-up), shared by every session."""

    def __init__(self, *, watching: bool = False) -> None:
        self.watching = watching
        self._lock = threading.Lock()
        self.last_report: IndexReport | None = None
        self.last_report_at: datetime | None = None
        self.last_error: str | None = None
        self._resolved: dict[str, str] = {}

    def record_report(self, report: IndexReport) -> None:
        with self._lock:
            if report.wrote or self.last_report is None:
                self.last_report, self.last_report_at = report, datetime.now()
            self.last_error = None
        if report.wrote:
            log.info("index rebuilt: %s", summarize_report(report))

    def record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.last_error = str(exc)
        log.warning("re-indexing failed: %s", exc)

    def resolve(self, selection: str, used: str) -> None:
        with self._lock:
            self._resolved[selection] = used

    def resolved(self, selection: str) -> str | None:
        with self._lock:
            return self._resolved.get(selection)


# -- rendering (every piece of document or user text goes through html.escape) ----------------
def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _lines_label(start: int, end: int, page: int | None = None) -> str:
    label = f"line {start}" if start == end else f"lines {start}–{end}"
    return f"{label} · page {page}" if page else label


def _message_text(message: dict) -> str:
    """The text of a chat message, whether Gradio hands it back as a string or as parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def render_streaming(text: str) -> str:
    if not text:
        return '<span class="rag-thinking">Searching the documents…</span>'
    return f'{_e(text)}<span class="rag-cursor">▍</span>'


def render_answer(answer: Answer) -> str:
    """The final chat message: the answer with its markers, its sources and a details line."""
    details = render_details(answer)
    if answer.refused:
        return (
            '<div class="rag-refusal rag-final"><span class="rag-refusal-title">Not in the documents'
            f"</span><span>{_e(answer.text)}</span></div>{details}"
        )
    markers = {c.marker for c in answer.citations}

    def badge(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f'<span class="rag-marker">[{n}]</span>' if n in markers else match.group(0)

    body = _MARKER.sub(badge, _e(answer.text))
    sources = ""
    if answer.citations:
        items = "".join(
            f'<span class="rag-src"><b>[{c.marker}]</b> {_e(c.source)} · '
            f"{_lines_label(c.start_line, c.end_line, c.page)}</span>"
            for c in answer.citations
        )
        sources = f'<div class="rag-sources">{items}</div>'
    return f'<div class="rag-answer rag-final">{body}</div>{sources}{details}'


def render_details(answer: Answer) -> str:
    parts = []
    if answer.standalone_question:
        parts.append(f'Searched for: <span class="rag-standalone">{_e(answer.standalone_question)}</span>')
    parts.append(f'<span class="rag-generator">{_e(answer.generator)}</span> · {_e(answer.mode)}')
    parts.append(f"{answer.timings.total:.1f} s")
    note = ""
    if answer.fallback_reason:
        note = f'<div class="rag-note">Note: {_e(answer.fallback_reason)}</div>'
    return f'<div class="rag-details">{" · ".join(parts)}</div>{note}'


def render_error(message: str) -> str:
    return (
        '<div class="rag-error rag-final"><span class="rag-error-title">Could not answer</span>'
        f"<span>{_e(message)}</span></div>"
    )


def render_citations(turn_index: int | None, turn: Turn | None) -> str:
    """The clickable source cards of one answer (click data is `turn:marker`, checked server-side)."""
    if turn is None:
        return (
            '<div class="rag-panel-empty">Sources of the selected answer appear here. '
            "Click one to read it in context.</div>"
        )
    head = f'<div class="rag-panel-head">Sources for <q>{_e(turn.question)}</q></div>'
    if turn.refused:
        return head + '<div class="rag-panel-empty">No sources: the documents do not answer this.</div>'
    if not turn.citations:
        return head + '<div class="rag-panel-empty">This answer cites no sources.</div>'
    cards = []
    for c in turn.citations:
        quote = " ".join(c.quote.split())
        if len(quote) > 160:
            quote = quote[:157].rstrip() + "…"
        warn = "" if c.verified else (
            '<span class="rag-unverified" title="quote not found at these lines">unverified</span>'
        )
        cards.append(
            f'<button type="button" class="rag-cite" data-cite="{turn_index}:{c.marker}">'
            f'<span class="rag-cite-n">[{c.marker}]</span>'
            f'<span class="rag-cite-body"><span class="rag-cite-file">{_e(c.source)}</span>'
            f'<span class="rag-cite-lines">{_lines_label(c.start_line, c.end_line, c.page)}</span>{warn}'
            f'<span class="rag-cite-quote">{_e(quote)}</span></span></button>'
        )
    return head + f'<div class="rag-cites">{"".join(cards)}</div>'


def render_viewer_message(message: str) -> str:
    return f'<div class="rag-panel-empty">{_e(message)}</div>'


def _quote_span(cited: str, quote: str) -> tuple[int, int] | None:
    """Where the quote sits in the cited text, allowing for differences in whitespace."""
    words = quote.split()
    if not words:
        return None
    match = re.search(r"\s+".join(re.escape(w) for w in words), cited)
    return match.span() if match else None


def render_passage(citation: Citation, lines: Sequence[str], *, context: int = CONTEXT_LINES) -> str:
    """The cited lines in context: line numbers, cited lines highlighted, the quote emphasised."""
    total = len(lines)
    head = (
        f'<div class="rag-viewer-head"><span class="rag-cite-n">[{citation.marker}]</span>'
        f'<span class="rag-viewer-file">{_e(citation.source)}</span>'
        f'<span class="rag-cite-lines">{_lines_label(citation.start_line, citation.end_line, citation.page)}'
        "</span></div>"
    )
    if citation.start_line < 1 or citation.start_line > total:
        return head + render_viewer_message(
            "The file has changed since this answer: the cited lines are no longer there."
        )
    first_cited = citation.start_line
    last_cited = min(citation.end_line, total, first_cited + MAX_CITED_LINES - 1)
    cited_text = "\n".join(lines[first_cited - 1 : last_cited])
    span = _quote_span(cited_text, citation.quote)
    notes = []
    if span is None:
        notes.append("The quote is not at these lines any more; the file may have changed since this answer.")
    if last_cited < citation.end_line:
        notes.append(f"Showing the first {MAX_CITED_LINES} cited lines.")

    rows = []
    offset = 0  # position of the current cited line inside cited_text
    for number in range(max(1, first_cited - context), min(total, last_cited + context) + 1):
        line = lines[number - 1]
        if first_cited <= number <= last_cited:
            start, end = offset, offset + len(line)
            offset = end + 1
            if span and span[0] < end and span[1] > start:
                a, b = max(span[0], start) - start, min(span[1], end) - start
                inner = f'{_e(line[:a])}<strong class="rag-quote">{_e(line[a:b])}</strong>{_e(line[b:])}'
            else:
                inner = _e(line)
            rows.append(
                f'<div class="rag-line rag-hit"><span class="rag-ln">{number}</span>'
                f'<mark class="rag-lt">{inner or "&nbsp;"}</mark></div>'
            )
        else:
            rows.append(
                f'<div class="rag-line"><span class="rag-ln">{number}</span>'
                f'<span class="rag-lt">{_e(line) or "&nbsp;"}</span></div>'
            )
    note_html = "".join(f'<div class="rag-note">{_e(n)}</div>' for n in notes)
    return f'{head}{note_html}<div class="rag-passage">{"".join(rows)}</div>'


def summarize_report(report: IndexReport) -> str:
    return (
        f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
        f"{len(report.unchanged)} unchanged; {report.chunks} chunks, {report.embedded_chunks} embedded; "
        f"{report.seconds:.2f} s"
    )


def render_report(report: IndexReport) -> str:
    rows = []
    if report.full_rebuild_reason:
        rows.append(f'<div class="rag-note">Full rebuild: {_e(report.full_rebuild_reason)}</div>')
    for label in ("added", "changed", "removed"):
        for path in getattr(report, label):
            rows.append(f'<li><span class="rag-tag rag-tag-{label}">{label}</span> {_e(path)}</li>')
    for line in report.skipped:
        rows.append(f'<li><span class="rag-tag rag-tag-skipped">skipped</span> {_e(line)}</li>')
    listing = f'<ul class="rag-report-list">{"".join(rows)}</ul>' if rows else ""
    verdict = "Index updated" if report.wrote else "Index already up to date"
    return f'<div class="rag-report"><b>{verdict}</b><div>{_e(summarize_report(report))}</div>{listing}</div>'


def _when(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: IndexStatus | None, activity: Activity | None = None, error: str | None = None) -> str:
    """The index panel: documents, chunks, model, build time, and what the watcher did last."""
    if status is None:
        body = render_viewer_message(error or "No index yet: press Rebuild index.")
    else:
        model = status.embedding_model
        short = model.rsplit("/", 1)[-1]
        files = "".join(f"<li>{_e(s)}</li>" for s in status.sources)
        body = (
            '<div class="rag-stats">'
            f'<div class="rag-stat"><span>Documents</span><b data-stat="documents">{status.documents}</b></div>'
            f'<div class="rag-stat"><span>Chunks</span><b data-stat="chunks">{status.chunks}</b></div>'
            f'<div class="rag-stat rag-wide"><span>Embedding model</span><b title="{_e(model)}">{_e(short)}'
            f"</b><small>{status.dimension} dimensions · {status.chunk_tokens}-token chunks</small></div>"
            '<div class="rag-stat rag-wide"><span>Built at</span>'
            f'<b data-stat="built-at">{_when(status.built_at)}</b></div>'
            "</div>"
            f'<details class="rag-files"><summary>{status.documents} indexed files</summary><ul>{files}</ul></details>'
        )
    watch = ""
    if activity is not None and activity.watching:
        line = "Watching the documents folder; edits are indexed automatically."
        if activity.last_error:
            line = f"Re-indexing failed: {activity.last_error}"
        elif activity.last_report is not None and activity.last_report_at is not None and activity.last_report.wrote:
            line = f"Re-indexed at {activity.last_report_at:%H:%M:%S}: {summarize_report(activity.last_report)}"
        watch = f'<div class="rag-watch"><span class="rag-dot"></span>{_e(line)}</div>'
    return f'<div class="rag-status">{body}{watch}</div>'


# -- handlers ----------------------------------------------------------------------------------
class ChatHandlers:
    """The event handlers of the page, as plain methods (callable directly in tests)."""

    def __init__(self, rag: Rag, activity: Activity | None = None) -> None:
        self.rag = rag
        self.activity = activity or Activity()

    def ask_api(self, question: str, generator: str = "", top_k: int = 0, mode: str = "") -> dict:
        """The server's API: one complete answer as JSON (the fields of `rag.Answer`).

        From Python: `gradio_client.Client(url).predict("...", api_name="/ask")`. A bad question
        or setting comes back as an error with the product's one-line message.
        """
        try:
            answer = self.rag.ask(
                question or "", generator=generator or None, top_k=int(top_k) or None, mode=mode or None
            )
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return answer.model_dump(mode="json")

    @staticmethod
    def _respond_out(**values: object) -> tuple:
        return tuple(values.get(name, gr.skip()) for name in RESPOND_OUTPUTS)

    def respond(self, question: str, chat: list | None, turns: list | None, generator: str | None,
                top_k: float | None) -> Iterator[tuple]:
        """Stream one answer into the chat; errors become a message in the chat, never a crash."""
        chat = list(chat or [])
        turns = list(turns or [])
        try:
            cleaned = self.rag.check_question(question or "")
        except QuestionError as exc:
            gr.Warning(str(exc))
            yield self._respond_out()
            return
        chat += [{"role": "user", "content": _e(cleaned)}, {"role": "assistant", "content": render_streaming("")}]
        busy = {"send": gr.update(interactive=False), "stop": gr.update(interactive=True)}
        idle = {"send": gr.update(interactive=True), "stop": gr.update(interactive=False)}
        yield self._respond_out(question="", chat=list(chat), viewer=render_viewer_message(""), **busy)

        history = [(t.question, t.text) for t in turns][-HISTORY_TURNS:]
        selection = generator or self.rag.settings.generator
        try:
            stream = self.rag.ask_stream(
                cleaned, generator=selection, top_k=int(top_k) if top_k else None, history=history
            )
            text, shown = "", 0.0
            try:
                for piece in stream:
                    text += piece
                    if time.monotonic() - shown >= STREAM_FRAME_SECONDS:
                        chat[-1] = {"role": "assistant", "content": render_streaming(text)}
                        shown = time.monotonic()
                        yield self._respond_out(chat=list(chat))
            finally:
                # Reached early only when the stop button cancelled us: end the backend's work too.
                stream.close()
            answer = stream.answer
            if answer is None:  # only if the stream was closed from outside
                raise RagError("the answer was interrupted")
        except RagError as exc:
            gr.Warning(str(exc))
            chat[-1] = {"role": "assistant", "content": render_error(str(exc))}
            yield self._respond_out(chat=list(chat), **idle)
            return
        except Exception as exc:  # a bug must not take the chat down with it
            log.exception("answering %r failed", cleaned)
            message = f"unexpected {type(exc).__name__}; see the server log. The chat still works."
            gr.Warning(message)
            chat[-1] = {"role": "assistant", "content": render_error(message)}
            yield self._respond_out(chat=list(chat), **idle)
            return

        turn = Turn(
            question=cleaned,
            text=answer.text,
            citations=tuple(answer.citations),
            refused=answer.refused,
            msg=len(chat) - 1,
            generator=answer.generator,
        )
        turns.append(turn)
        self.activity.resolve(selection, answer.generator)
        chat[-1] = {"role": "assistant", "content": render_answer(answer)}
        yield self._respond_out(
            chat=list(chat),
            turns=turns,
            citations=render_citations(len(turns) - 1, turn),
            viewer=render_viewer_message(VIEWER_HINT),
            generator_note=self.generator_note(selection, answer.generator),
            **idle,
        )

    def stop(self, chat: list | None, turns: list | None) -> tuple:
        """After the stop button cancelled a generation: keep what arrived and say it stopped."""
        chat = list(chat or [])
        turns = list(turns or [])
        if len(chat) >= 2 and chat[-1].get("role") == "assistant":
            shown = _message_text(chat[-1])
            if any(mark in shown for mark in _STREAMING):
                partial = html.unescape(re.sub(r"<span class=\"rag-(?:cursor|thinking)\">.*?</span>", "", shown))
                note = "Stopped." if partial.strip() else "Stopped before an answer arrived."
                chat[-1] = {
                    "role": "assistant",
                    "content": f'{_e(partial)}<div class="rag-stopped rag-final">{note}</div>',
                }
                question = html.unescape(_message_text(chat[-2]))
                if partial.strip():
                    turns.append(Turn(question=question, text=partial.strip(), msg=len(chat) - 1))
        return chat, turns, gr.update(interactive=True), gr.update(interactive=False)

    def _lookup(self, key: object, turns: Sequence[Turn] | None) -> Citation | None:
        match = _CITE_KEY.match(key) if isinstance(key, str) else None
        if match is None or not turns:
            return None
        index, marker = int(match.group(1)), int(match.group(2))
        if index >= len(turns):
            return None
        return next((c for c in turns[index].citations if c.marker == marker), None)

    def open_citation(self, key: object, turns: Sequence[Turn] | None) -> str:
        """The passage viewer for a clicked source (`key` comes from the client: checked)."""
        citation = self._lookup(key, turns)
        if citation is None:
            return render_viewer_message("That source is not available.")
        return self.passage(citation)

    def passage(self, citation: Citation) -> str:
        """Only files of the index in use are shown; the path never reaches the disk directly."""
        try:
            known = self.rag.status().sources
        except RagError as exc:
            return render_viewer_message(f"The index is not available: {exc}")
        if citation.source not in known:
            return render_viewer_message(f"{citation.source} is no longer in the index.")
        lines = self.rag.document_lines(citation.source)
        if lines is None:
            return render_viewer_message(f"{citation.source} cannot be read any more.")
        return render_passage(citation, lines)

    def select_message(self, index: object, turns: Sequence[Turn] | None) -> tuple[str, str]:
        """Clicking an earlier message shows that answer's sources."""
        turns = list(turns or [])
        if isinstance(index, (list, tuple)) and index:
            index = index[0]
        if not isinstance(index, int):
            return gr.skip(), gr.skip()
        for number, turn in enumerate(turns):
            if turn.msg in (index, index + 1):
                return render_citations(number, turn), render_viewer_message(VIEWER_HINT)
        return gr.skip(), gr.skip()

    def clear(self) -> tuple:
        """A new conversation (also ends an answer in progress)."""
        idle = (gr.update(interactive=True), gr.update(interactive=False))
        return [], [], render_citations(None, None), render_viewer_message(""), "", *idle

    def status_html(self) -> str:
        try:
            return render_status(self.rag.status(), self.activity)
        except RagError as exc:
            return render_status(None, self.activity, error=str(exc))

    def rebuild(self) -> tuple[str, str]:
        """The incremental rebuild (same as `rag index`), then its summary and the fresh status."""
        try:
            report = self.rag.index()
        except RagError as exc:
            gr.Warning(f"Rebuild failed: {exc}")
            return render_error(str(exc)), self.status_html()
        self.activity.record_report(report)
        return render_report(report), self.status_html()

    def generator_note(self, selection: str | None, used: str | None = None) -> str:
        selection = selection or self.rag.settings.generator
        used = used or self.activity.resolved(selection)
        if used is None:
            shown = _e(selection)
            if selection == "auto":
                shown += " <small>(picked on the first question)</small>"
        else:
            shown = _e(used) if used == selection else f"{_e(used)} <small>(for {_e(selection)})</small>"
        return f'<div class="rag-gen">In use: <b class="rag-generator">{shown}</b></div>'


# -- the page ----------------------------------------------------------------------------------
THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    radius_size="md",
    # System fonts only: the page must not reach out to a font CDN.
    font=["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)

CSS = """
.gradio-container { max-width: 1360px !important; margin: 0 auto !important; }
#header { padding: 6px 4px 2px; }
#header h1 { font-size: 1.65rem; font-weight: 700; margin: 0; letter-spacing: -0.01em; }
#header h1 .rag-logo { color: var(--color-accent); margin-right: .35rem; }
#header p { margin: .3rem 0 0; color: var(--body-text-color-subdued); font-size: .95rem; }
#chat .rag-marker { color: var(--color-accent); font-weight: 700; font-size: .82em; vertical-align: .1em; }
#chat .rag-sources { display: flex; flex-wrap: wrap; gap: .3rem .4rem; margin-top: .55rem;
  padding-top: .5rem; border-top: 1px solid var(--border-color-primary); font-size: .8em; }
#chat .rag-src { background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);
  border-radius: 999px; padding: .05rem .55rem; }
#chat .rag-src b { color: var(--color-accent); }
#chat .rag-details { margin-top: .35rem; font-size: .76em; color: var(--body-text-color-subdued); }
#chat .rag-note, .rag-note { font-size: .8em; color: #b45309; margin: .3rem 0; }
.rag-refusal, .rag-error { display: flex; flex-direction: column; gap: .15rem;
  border-left: 3px solid #d97706; padding: .1rem 0 .1rem .65rem; }
.rag-error { border-left-color: #dc2626; }
.rag-refusal-title { font-weight: 700; color: #b45309; }
.rag-error-title { font-weight: 700; color: #dc2626; }
#chat .rag-stopped { margin-top: .35rem; font-size: .8em; color: var(--body-text-color-subdued); font-style: italic; }
#chat .rag-thinking { color: var(--body-text-color-subdued); font-style: italic; }
#chat .rag-cursor { color: var(--color-accent); animation: rag-blink 1s steps(2, start) infinite; }
@keyframes rag-blink { to { visibility: hidden; } }
#composer { align-items: stretch; gap: 8px; }
#send, #stop, #clear { min-width: 96px; white-space: nowrap; }
#side-panel { background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-xl); padding: 14px 14px 18px; align-self: flex-start; }
#side-panel .rag-stat { background: var(--background-fill-primary); }
.rag-section-title { font-weight: 600; font-size: .8rem; text-transform: uppercase; letter-spacing: .06em;
  color: var(--body-text-color-subdued); margin: .2rem 0 .45rem; }
.rag-panel-head { font-weight: 600; margin-bottom: .5rem; }
.rag-panel-head q { font-weight: 400; color: var(--body-text-color-subdued); }
.rag-panel-empty { color: var(--body-text-color-subdued); font-size: .9rem; padding: .25rem 0; }
.rag-panel-empty:empty { display: none; }
.rag-cites { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: .5rem; }
.rag-cite { display: flex; gap: .55rem; align-items: flex-start; text-align: left; width: 100%;
  padding: .55rem .7rem; border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  background: var(--background-fill-primary); cursor: pointer; color: inherit; font: inherit;
  transition: border-color .15s, box-shadow .15s; }
.rag-cite:hover, .rag-cite.active { border-color: var(--color-accent); box-shadow: 0 0 0 2px var(--color-accent-soft); }
.rag-cite-n { color: var(--color-accent); font-weight: 700; }
.rag-cite-body { display: flex; flex-direction: column; gap: .1rem; min-width: 0; }
.rag-cite-file, .rag-viewer-file { font-weight: 600; overflow-wrap: anywhere; }
.rag-cite-lines { font-size: .8em; color: var(--body-text-color-subdued); }
.rag-cite-quote { font-size: .82em; color: var(--body-text-color-subdued); line-height: 1.35; }
.rag-unverified { font-size: .72em; color: #b45309; }
.rag-viewer-head { display: flex; gap: .5rem; align-items: baseline; flex-wrap: wrap; margin-bottom: .45rem; }
.rag-passage { font-family: var(--font-mono); font-size: .8rem; line-height: 1.5; max-height: 360px; overflow: auto;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg); background: var(--background-fill-secondary);
  padding: .35rem 0; }
.rag-line { display: grid; grid-template-columns: 3.4em 1fr; padding: 0 .6rem 0 0; }
.rag-ln { color: var(--body-text-color-subdued); text-align: right; padding-right: .8em; user-select: none; opacity: .75; }
.rag-lt { white-space: pre-wrap; word-break: break-word; }
.rag-hit { background: rgba(250, 204, 21, .14); box-shadow: inset 3px 0 0 #eab308; }
.rag-hit mark { background: transparent; color: inherit; }
.rag-quote { background: rgba(250, 204, 21, .45); border-radius: 2px; font-weight: 600; }
.rag-stats { display: grid; grid-template-columns: 1fr 1fr; gap: .45rem; }
.rag-stat { display: flex; flex-direction: column; padding: .5rem .65rem; border-radius: var(--radius-lg);
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); min-width: 0; }
.rag-stat span { font-size: .72rem; text-transform: uppercase; letter-spacing: .05em; color: var(--body-text-color-subdued); }
.rag-stat b { font-size: 1.05rem; word-break: break-word; }
.rag-stat small { color: var(--body-text-color-subdued); font-size: .72rem; }
.rag-wide { grid-column: span 2; }
.rag-files { margin-top: .5rem; font-size: .85rem; }
.rag-files ul, .rag-report-list { margin: .3rem 0 0 1rem; padding: 0; word-break: break-all; }
.rag-watch { display: flex; align-items: center; gap: .45rem; margin-top: .55rem; font-size: .8rem;
  color: var(--body-text-color-subdued); }
.rag-dot { width: 8px; height: 8px; border-radius: 50%; background: #22c55e; flex: none;
  box-shadow: 0 0 0 3px rgba(34, 197, 94, .2); }
.rag-report { font-size: .85rem; }
.rag-tag { font-size: .7rem; padding: 0 .35rem; border-radius: 4px; background: var(--background-fill-secondary); }
.rag-tag-added { color: #15803d; } .rag-tag-changed { color: #b45309; } .rag-tag-removed { color: #dc2626; }
.rag-gen { font-size: .88rem; margin-top: .2rem; }
.rag-gen small { color: var(--body-text-color-subdued); font-weight: 400; }
"""

# The source cards re-render on every answer: one delegated listener on the panel handles them.
_CITATIONS_JS = """
element.addEventListener('click', (event) => {
  const card = event.target.closest('[data-cite]');
  if (!card || !element.contains(card)) return;
  element.querySelectorAll('[data-cite]').forEach((el) => el.classList.toggle('active', el === card));
  trigger('click', { cite: card.dataset.cite });
});
"""

_INTRO = (
    '<div id="header-inner"><h1><span class="rag-logo">◆</span>Ask your documents</h1>'
    "<p>Answers come only from the indexed files, and every [n] marker points to the exact lines it was "
    "taken from. Ask follow-ups in your own words; the conversation is taken into account.</p></div>"
)


def build_app(rag: Rag, *, activity: Activity | None = None) -> gr.Blocks:
    """The chat page over one Rag. Launch it with `launch(**launch_options(rag.settings))` for the
    theme and styles (Gradio 6 takes them at launch)."""
    handlers = ChatHandlers(rag, activity)
    settings = rag.settings
    choices = rag.available_generators()
    if settings.generator not in choices:
        choices.append(settings.generator)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.HTML(_INTRO, elem_id="header", js_on_load=None)
        turns = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=480):
                chat = gr.Chatbot(
                    elem_id="chat",
                    show_label=False,
                    height="58vh",
                    min_height=380,
                    placeholder=(
                        "**Ask a question about your documents.**  \n"
                        "Answers stream in as they are written; sources are listed under each answer."
                    ),
                    feedback_options=None,
                    buttons=["copy"],
                )
                with gr.Row(elem_id="composer"):
                    question = gr.Textbox(
                        elem_id="question",
                        show_label=False,
                        placeholder="Ask something… (Enter to send)",
                        lines=1,
                        max_lines=6,
                        scale=8,
                        autofocus=True,
                        container=False,
                    )
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=0)
                    stop = gr.Button("Stop", elem_id="stop", variant="stop", scale=0, interactive=False)
                    clear = gr.Button("New chat", elem_id="clear", variant="secondary", scale=0)
                gr.HTML('<div class="rag-section-title">Sources</div>', js_on_load=None)
                citations = gr.HTML(
                    render_citations(None, None), elem_id="answer-citations", js_on_load=_CITATIONS_JS
                )
                viewer = gr.HTML(render_viewer_message(""), elem_id="passage-viewer", js_on_load=None)

            with gr.Column(scale=3, min_width=300, elem_id="side-panel"):
                gr.HTML('<div class="rag-section-title">Index</div>', js_on_load=None)
                status = gr.HTML("", elem_id="status", js_on_load=None)
                rebuild = gr.Button("Rebuild index", elem_id="rebuild", variant="secondary")
                report = gr.HTML("", elem_id="rebuild-summary", js_on_load=None)
                gr.HTML('<div class="rag-section-title">Answering</div>', js_on_load=None)
                generator = gr.Radio(
                    choices,
                    value=settings.generator,
                    label="Generator",
                    info="auto: the OpenAI-compatible endpoint if set, else the local model, else extractive",
                    elem_id="generator",
                )
                generator_note = gr.HTML("", elem_id="generator-in-use", js_on_load=None)
                top_k = gr.Slider(
                    1, max(20, settings.top_k), value=settings.top_k, step=1,
                    label="Passages (top-k)", elem_id="top-k",
                )
        timer = gr.Timer(STATUS_REFRESH_SECONDS)

        outputs = {
            "question": question, "chat": chat, "turns": turns, "citations": citations, "viewer": viewer,
            "generator_note": generator_note, "send": send, "stop": stop,
        }
        answering = gr.on(
            triggers=[send.click, question.submit],
            fn=handlers.respond,
            inputs=[question, chat, turns, generator, top_k],
            outputs=[outputs[name] for name in RESPOND_OUTPUTS],
            show_progress="hidden",
            trigger_mode="once",
            api_visibility="private",
        )
        stop.click(
            handlers.stop,
            inputs=[chat, turns],
            outputs=[outputs[name] for name in STOP_OUTPUTS],
            cancels=[answering],
            queue=False,
            api_visibility="private",
        )

        def open_citation(turn_list: list, evt: gr.EventData) -> str:
            data = getattr(evt, "_data", None)
            return handlers.open_citation(data.get("cite") if isinstance(data, dict) else None, turn_list)

        def select_message(turn_list: list, evt: gr.SelectData) -> tuple[str, str]:
            return handlers.select_message(evt.index, turn_list)

        citations.click(open_citation, inputs=[turns], outputs=[viewer], api_visibility="private")
        chat.select(select_message, inputs=[turns], outputs=[citations, viewer], api_visibility="private")
        clear_outputs = [chat, turns, citations, viewer, question, send, stop]
        clear.click(handlers.clear, outputs=clear_outputs, cancels=[answering], api_visibility="private")
        # The chat's own trash icon: forget the conversation behind it too.
        chat.clear(handlers.clear, outputs=clear_outputs, cancels=[answering], api_visibility="private")
        rebuild.click(handlers.rebuild, outputs=[report, status], api_visibility="private")
        generator.change(handlers.generator_note, inputs=[generator], outputs=[generator_note],
                         api_visibility="private")
        timer.tick(handlers.status_html, outputs=[status], show_progress="hidden", api_visibility="private")
        # Filled when the page opens (private: the page's events are not part of the API).
        demo.load(handlers.status_html, outputs=[status], show_progress="hidden", api_visibility="private")
        demo.load(lambda: handlers.generator_note(settings.generator), outputs=[generator_note],
                  show_progress="hidden", api_visibility="private")
        gr.api(handlers.ask_api, api_name="ask", api_description="Answer a question from the documents, "
               "with citations (file, lines, verified quote); JSON of rag.Answer.")
    return demo


# -- serving -----------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(settings: Settings) -> str | None:
    """A warning when the chat would be reachable from other machines without a password."""
    if is_loopback(settings.host) or settings.auth is not None:
        return None
    return (
        f"serving on {settings.host}, which other machines can reach, without a password; "
        "set RAG_AUTH=user:password (or bind to 127.0.0.1)"
    )


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for `Blocks.launch` from the settings (address, auth, look)."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "auth": settings.auth_pair(),
        "auth_message": "This chat is protected: sign in with the RAG_AUTH credentials.",
        "theme": THEME,
        "css": CSS,
        "footer_links": ["gradio", "settings"],
        "ssr_mode": False,
        "quiet": True,
        "share": False,
        "show_error": False,
    }


def _watch_forever(rag: Rag, activity: Activity, stop: threading.Event) -> None:
    try:
        rag.watch(activity.record_report, on_error=activity.record_error, stop_event=stop)
    except Exception:  # the thread must say why it died
        log.exception("live re-indexing stopped")


def _warm_up(rag: Rag, activity: Activity) -> None:
    """Load the index, embedder and generator before the first question needs them."""
    try:
        try:
            rag.status()
        except RagError:
            rag.embedder  # no index yet: the watcher (or the first question) builds it
        else:
            rag.retriever()
        selection = rag.settings.generator
        activity.resolve(selection, rag.generator(selection).name)
    except RagError as exc:
        log.warning("warm-up: %s", exc)
    except Exception:
        log.exception("warm-up failed")


def serve(settings: Settings) -> None:
    """Serve the chat on settings.host:settings.port until interrupted, re-indexing on changes."""
    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
        print(f"warning: {warning}", flush=True)
    rag = Rag(settings)
    activity = Activity(watching=settings.watch)
    stop = threading.Event()
    if settings.watch:
        threading.Thread(target=_watch_forever, args=(rag, activity, stop), name="rag-watch", daemon=True).start()
    demo = build_app(rag, activity=activity)
    try:
        _, local_url, _ = demo.launch(prevent_thread_lock=True, **launch_options(settings))
        print(f"Chat running on {local_url}  (Ctrl+C to stop)", flush=True)
        # Started only now: llama-cpp silences the whole process's stdout/stderr while it loads.
        threading.Thread(target=_warm_up, args=(rag, activity), name="rag-warm-up", daemon=True).start()
        demo.block_thread()
    finally:
        stop.set()
