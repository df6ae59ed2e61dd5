"""The HTML of the documents panel, as pure functions of plain values (no Gradio here).

Names come from clients and from the seeds folder: every one goes through `html.escape`, in the
text and in the `data-remove` attribute the page sends back (which the server checks again).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

State = Literal["queued", "indexing", "indexed", "skipped", "refused", "removing", "removed", "failed"]

STATE_LABELS: dict[str, str] = {
    "queued": "queued",
    "indexing": "indexing…",
    "indexed": "indexed",
    "skipped": "skipped",
    "refused": "refused",
    "removing": "removing…",
    "removed": "removed",
    "failed": "failed",
}
UPLOADS_OFF = (
    "Adding and removing documents is turned off on this server (RAG_UPLOADS_ENABLED=false); "
    "the list is read-only."
)


@dataclass(frozen=True)
class IndexedDocument:
    """One document of the index in use."""

    name: str
    chunks: int
    kind: str = ""


@dataclass(frozen=True)
class FileState:
    """One file of an upload or removal: where it is, and why when it did not go through."""

    name: str
    state: State
    chunks: int = 0
    reason: str | None = None


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _chunks(n: int) -> str:
    return f"{n} chunk" if n == 1 else f"{n} chunks"


def _size(mb: float) -> str:
    return f"{mb:g} MB"


def upload_help(types: Sequence[str], max_mb: float, max_total_mb: float) -> str:
    """The line under the drop zone: what is accepted, and how big."""
    accepted = ", ".join(types) or "none"
    return (
        f'<div class="rag-doc-help">Accepted: {_e(accepted)} · up to {_e(_size(max_mb))} a file, '
        f"{_e(_size(max_total_mb))} an upload. Files are checked on the server and indexed at once; "
        "answers use them from the next question.</div>"
    )


def render_uploads_off() -> str:
    return f'<div class="rag-doc-off">{_e(UPLOADS_OFF)}</div>'


def _reason(state: FileState) -> str:
    """The reason without the file name it starts with (the row already shows the name)."""
    reason = state.reason or ""
    for prefix in (f"{state.name}: ", f"'{state.name}': "):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def render_file_states(states: Sequence[FileState], title: str = "Upload") -> str:
    """The files of the latest upload or removal, each with its state and, when refused or
    skipped, the reason in plain words."""
    if not states:
        return ""
    rows = []
    for s in states:
        detail = ""
        if s.state == "indexed":
            detail = f'<span class="rag-doc-chunks">{_chunks(s.chunks)}</span>'
        elif s.reason:
            detail = f'<div class="rag-doc-reason">{_e(_reason(s))}</div>'
        rows.append(
            f'<li class="rag-doc-row" data-state="{s.state}"><span class="rag-doc-name">{_e(s.name)}</span>'
            f'<span class="rag-tag rag-state rag-state-{s.state}">{STATE_LABELS[s.state]}</span>{detail}</li>'
        )
    return f'<div class="rag-doc-progress"><b>{_e(title)}</b><ul class="rag-doc-rows">{"".join(rows)}</ul></div>'


def render_document_list(
    documents: Sequence[IndexedDocument] | None, *, can_remove: bool, error: str | None = None
) -> str:
    """Every indexed document with its chunk count, and a remove button when removing is allowed
    (`data-remove` carries the name back; the server accepts only names the index holds)."""
    if documents is None:
        return f'<div class="rag-panel-empty">{_e(error or "No index yet: add documents or press Rebuild index.")}</div>'
    if not documents:
        return '<div class="rag-panel-empty">The index holds no documents yet.</div>'
    rows = []
    for d in documents:
        message = _message_of(d.name)
        button = (
            f'<button type="button" class="rag-doc-remove" data-remove="{_e(d.name)}" '
            f'title="Remove {_e(d.name)}">Remove</button>'
            if can_remove and not message
            else ""
        )
        kind = f'<span class="rag-doc-kind">{_e(d.kind)}</span> · ' if d.kind else ""
        if message:  # removed with its message, not on its own
            kind += f'<span class="rag-doc-part">attachment of {_e(message)}</span> · '

        rows.append(
            f'<li class="rag-doc-row" data-doc="{_e(d.name)}"><span class="rag-doc-name">{_e(d.name)}</span>'
            f'<span class="rag-doc-meta">{kind}<span class="rag-doc-chunks">{_chunks(d.chunks)}</span></span>'
            f"{button}</li>"
        )
    count = f"{len(documents)} document" + ("" if len(documents) == 1 else "s")
    return f'<div class="rag-doc-list"><div class="rag-doc-count">{count}</div><ul class="rag-doc-rows">{"".join(rows)}</ul></div>'


def _message_of(name: str) -> str:
    """The mail message a document is an attachment of (`mail.eml/report.pdf`), or ""."""
    container = name.rpartition("/")[0]
    return container if container.lower().endswith(".eml") else ""


def render_remove_prompt(name: str) -> str:
    return (
        f'<div class="rag-doc-confirm">Remove <b>{_e(name)}</b>? The file is deleted from the documents '
        "folder and the index is rebuilt without it.</div>"
    )
