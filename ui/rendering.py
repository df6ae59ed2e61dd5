"""The HTML of the chat page, as pure functions of the library's values (no Gradio here).

Every piece of document or user text goes through `html.escape`: a document is shown as text,
never as markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Sequence
from datetime import datetime

from rag import Answer, Citation, IndexReport, IndexStatus, describe_report, lines_label, report_changes
from ui.state import Activity, Turn, message_text

CONTEXT_LINES = 3  # lines shown around a cited range in the passage viewer
MAX_CITED_LINES = 80  # a citation spanning more lines is shown truncated
QUOTE_PREVIEW_CHARS = 160  # the quote on a source card is cut to this length
VIEWER_HINT = "Click a source above to read it in context."

# What an answer's bubble says before the server has started on it (shown by the page's own script
# the moment the question is sent, so it appears however busy the server is), and while the
# models are still loading at start.
SENDING = "Question sent; waiting for the server"
SEARCHING = "Searching the documents"
SEARCHING_WHILE_LOADING = "Searching the documents (the models are still loading, so this first answer takes longer)"

_MARKER = re.compile(r"\[(\d{1,3})\]")
_STREAMING = re.compile(r"<span class=\"rag-(?:cursor|thinking)\">.*?</span>")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# -- chat messages -----------------------------------------------------------------------------
def render_question(question: str) -> str:
    return _e(question)


def render_streaming(text: str, doing: str = SEARCHING) -> str:
    """An answer while it arrives: the text so far and a cursor, or before any text what is
    happening (searching, reading N passages, writing)."""
    if not text:
        return f'<span class="rag-thinking">{_e(doing[:1].upper() + doing[1:])}…</span>'
    return f'{_e(text)}<span class="rag-cursor">▍</span>'


def streamed_text(shown: str) -> str | None:
    """The plain text of a message still streaming (see `render_streaming`), else None."""
    if not _STREAMING.search(shown):
        return None
    return html.unescape(_STREAMING.sub("", shown))


def is_pending(chat: Sequence[dict]) -> bool:
    """Whether `chat` ends with a question the page's script showed as sent (`SENDING`) that no
    answer has started on: a question, then a note with no words (an answer that has started
    ends with words, a refusal, an error or "Stopped" once it is over)."""
    return (len(chat) >= 2 and chat[-2].get("role") == "user" and chat[-1].get("role") == "assistant"
            and streamed_text(message_text(chat[-1])) == "")


def render_stopped(partial: str) -> str:
    """A message whose generation the user stopped: what arrived, and that it stopped."""
    note = "Stopped." if partial.strip() else "Stopped before an answer arrived."
    return f'{_e(partial)}<div class="rag-stopped rag-final">{note}</div>'


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
            f"{lines_label(c.start_line, c.end_line, c.page)}</span>"
            for c in answer.citations
        )
        sources = f'<div class="rag-sources">{items}</div>'
    return f'<div class="rag-answer rag-final">{body}</div>{sources}{details}'


def render_details(answer: Answer) -> str:
    """The line under an answer: rewritten question, backend, retrieval mode, time, notes."""
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


# -- sources and the passage viewer ------------------------------------------------------------
def render_citations(turn_index: int | None, turn: Turn | None, changed: Collection[str] = ()) -> str:
    """The clickable source cards of one answer (click data is `turn:marker`, checked server-side);
    the cards of a document in `changed` say it has changed since the answer."""
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
    cards = "".join(_citation_card(turn_index, c, c.source in changed) for c in turn.citations)
    return head + f'<div class="rag-cites">{cards}</div>'


def _citation_card(turn_index: int | None, c: Citation, changed: bool = False) -> str:
    quote = " ".join(c.quote.split())
    if len(quote) > QUOTE_PREVIEW_CHARS:
        quote = quote[: QUOTE_PREVIEW_CHARS - 3].rstrip() + "…"
    warn = "" if c.verified else (
        '<span class="rag-unverified" title="quote not found at these lines">unverified</span>'
    )
    if changed:
        warn += '<span class="rag-changed" title="the lines cited may have moved">changed since this answer</span>'
    return (
        f'<button type="button" class="rag-cite" data-cite="{turn_index}:{c.marker}">'
        f'<span class="rag-cite-n">[{c.marker}]</span>'
        f'<span class="rag-cite-body"><span class="rag-cite-file">{_e(c.source)}</span>'
        f'<span class="rag-cite-lines">{lines_label(c.start_line, c.end_line, c.page)}</span>{warn}'
        f'<span class="rag-cite-quote">{_e(quote)}</span></span></button>'
    )


def render_viewer_message(message: str) -> str:
    return f'<div class="rag-panel-empty">{_e(message)}</div>'


def quote_span(cited: str, quote: str) -> tuple[int, int] | None:
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
        f'<span class="rag-cite-lines">{lines_label(citation.start_line, citation.end_line, citation.page)}'
        "</span></div>"
    )
    if citation.start_line < 1 or citation.start_line > total:
        return head + render_viewer_message(
            "The file has changed since this answer: the cited lines are no longer there."
        )
    first_cited = citation.start_line
    last_cited = min(citation.end_line, total, first_cited + MAX_CITED_LINES - 1)
    span = quote_span("\n".join(lines[first_cited - 1 : last_cited]), citation.quote)
    notes = []
    if span is None:
        notes.append("The quote is not at these lines any more; the file may have changed since this answer.")
    if last_cited < citation.end_line:
        notes.append(f"Showing the first {MAX_CITED_LINES} cited lines.")

    rows = []
    offset = 0  # where the current cited line starts in the cited text
    for number in range(max(1, first_cited - context), min(total, last_cited + context) + 1):
        line = lines[number - 1]
        if first_cited <= number <= last_cited:
            rows.append(_cited_row(number, line, span, offset))
            offset += len(line) + 1
        else:
            rows.append(
                f'<div class="rag-line"><span class="rag-ln">{number}</span>'
                f'<span class="rag-lt">{_e(line) or "&nbsp;"}</span></div>'
            )
    note_html = "".join(f'<div class="rag-note">{_e(n)}</div>' for n in notes)
    return f'{head}{note_html}<div class="rag-passage">{"".join(rows)}</div>'


def _cited_row(number: int, line: str, span: tuple[int, int] | None, offset: int) -> str:
    """A highlighted line; the part of the quote on it (span is in cited-text positions) in bold."""
    start, end = offset, offset + len(line)
    if span and span[0] < end and span[1] > start:
        a, b = max(span[0], start) - start, min(span[1], end) - start
        inner = f'{_e(line[:a])}<strong class="rag-quote">{_e(line[a:b])}</strong>{_e(line[b:])}'
    else:
        inner = _e(line)
    return (
        f'<div class="rag-line rag-hit"><span class="rag-ln">{number}</span>'
        f'<mark class="rag-lt">{inner or "&nbsp;"}</mark></div>'
    )


# -- the index panel ---------------------------------------------------------------------------
def render_report(report: IndexReport) -> str:
    """What a rebuild did: the verdict, the counts, and each file that changed or was skipped."""
    rows = []
    if report.full_rebuild_reason:
        rows.append(f'<div class="rag-note">Full rebuild: {_e(report.full_rebuild_reason)}</div>')
    for label, path in report_changes(report):
        rows.append(f'<li><span class="rag-tag rag-tag-{label}">{label}</span> {_e(path)}</li>')
    for line in report.skipped:
        rows.append(f'<li><span class="rag-tag rag-tag-skipped">skipped</span> {_e(line)}</li>')
    listing = f'<ul class="rag-report-list">{"".join(rows)}</ul>' if rows else ""
    verdict = "Index updated" if report.wrote else "Index already up to date"
    return f'<div class="rag-report"><b>{verdict}</b><div>{_e(describe_report(report))}</div>{listing}</div>'


def _when(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: IndexStatus | None, activity: Activity | None = None, error: str | None = None,
                  preparing: str | None = None) -> str:
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
    ahead = f'<div class="rag-watch rag-preparing"><span class="rag-dot"></span>{_e(preparing)}</div>' if preparing else ""
    return f'<div class="rag-status">{body}{_watch_line(activity)}{ahead}</div>'


def _watch_line(activity: Activity | None) -> str:
    if activity is not None and activity.warming:
        return f'<div class="rag-watch rag-warming"><span class="rag-dot"></span>{_e(activity.warming)}</div>'
    if activity is None or not activity.watching:
        return ""
    line = "Watching the documents folder; edits are indexed automatically."
    if activity.last_error:
        line = f"Re-indexing failed: {activity.last_error}"
    elif activity.last_report is not None and activity.last_report_at is not None and activity.last_report.wrote:
        line = f"Re-indexed at {activity.last_report_at:%H:%M:%S}: {describe_report(activity.last_report)}"
    return f'<div class="rag-watch"><span class="rag-dot"></span>{_e(line)}</div>'


def render_generator_note(selection: str, used: str | None) -> str:
    """Which backend answers: the selection, or the one that answered for it (`auto` resolves)."""
    if used is None:
        shown = _e(selection)
        if selection == "auto":
            shown += " <small>(picked on the first question)</small>"
    else:
        shown = _e(used) if used == selection else f"{_e(used)} <small>(for {_e(selection)})</small>"
    return f'<div class="rag-gen">In use: <b class="rag-generator">{shown}</b></div>'
