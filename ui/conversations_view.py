"""The HTML of the saved conversations list, as pure functions of the library's records (no Gradio).

Titles are the users' own questions: escaped everywhere, in the text and in attributes. The id
a row sends back (`data-chat`) is checked again by the store against the user who sends it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

CHANGED_NOTE = "This document has changed since the answer: the cited lines may no longer match."


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def render_chat_list(conversations: Sequence, current: str | None = None, error: str | None = None) -> str:
    """The user's conversations, most recent first, the open one marked; a row opens on click."""
    if error:
        return f'<div class="rag-panel-empty rag-chat-error">{_e(error)}</div>'
    if not conversations:
        return '<div class="rag-panel-empty">No saved conversations yet: every answer is saved as it completes.</div>'
    rows = "".join(
        f'<li><button type="button" class="rag-chat{" active" if c.id == current else ""}" data-chat="{_e(c.id)}" '
        f'title="{_e(c.title)}"><span class="rag-chat-title">{_e(c.title or "Untitled")}</span>'
        f'<span class="rag-chat-when">{_when(c.updated)}</span></button></li>'
        for c in conversations
    )
    return f'<ul class="rag-chat-list">{rows}</ul>'


def render_delete_prompt(title: str) -> str:
    return f'<div class="rag-note">Delete the conversation <q>{_e(title)}</q> and all its answers?</div>'

