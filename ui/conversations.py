"""The saved conversations of the page: save each answer, list, open, rename, delete, export.

The store (`rag.ChatStore`) takes the owner on every call: the login name Gradio gives the
request with RAG_AUTH, "" (one shared list) without it. A conversation id a browser sends is
only a request: the store answers "not found" for another user's conversation.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from rag import Answer, ChatStore, ChatStoreError, ConversationNotFoundError, Rag, document_hashes
from ui.conversations_view import render_chat_list, render_delete_prompt
from ui.rendering import (
    VIEWER_HINT,
    render_answer,
    render_citations,
    render_question,
    render_viewer_message,
)
from ui.state import Turn

log = logging.getLogger(__name__)

# The outputs of `open` and `new_chat`, in order (names so tests can read the tuples).
OPEN_OUTPUTS = ("chat", "turns", "citations", "viewer", "conversation", "chat_title", "chat_list", "chat_export")
DELETE_OUTPUTS = ("delete_confirm", "delete_prompt")
_SLUG = re.compile(r"[^\w-]+")


def owner_of(request: gr.Request | None) -> str:
    """Whose conversations: the login name with RAG_AUTH, "" (the shared list) without."""
    return (getattr(request, "username", None) or "") if request is not None else ""


def turn_of(answer: Answer, msg: int, hashes: dict[str, str] | None = None) -> Turn:
    """The page's record of an answered question (its chat message is `msg`)."""
    return Turn(question=answer.question, text=answer.text, citations=tuple(answer.citations),
                refused=answer.refused, msg=msg, generator=answer.generator, document_hashes=hashes or {})


class SavedConversations:
    """The conversations panel's handlers over one store (callable directly in tests)."""

    def __init__(self, rag: Rag, store: ChatStore | None = None, exports: Path | None = None) -> None:
        self.rag = rag
        self.store = store or ChatStore.for_settings(rag.settings)
        # Markdown files offered for download; Gradio copies each into its own cache when served.
        self.exports = exports or Path(tempfile.mkdtemp(prefix="rag-chats-"))

    def changed(self, turn: Turn) -> frozenset[str]:
        """The documents `turn` cites whose content has changed since it was answered (one that
        left the index is not among them: the viewer says it is no longer there)."""
        if not turn.document_hashes:
            return frozenset()
        current = document_hashes(self.rag, turn.document_hashes)
        return frozenset(s for s, h in turn.document_hashes.items() if s in current and current[s] != h)

    # -- saving ------------------------------------------------------------------------------
    def save(self, answer: Answer, conversation: str | None, request: gr.Request | None) -> tuple[str | None, dict]:
        """Save an answered question (starting a conversation when none is open); the id of its
        conversation and the hashes of the documents it cites. A failure is a warning, not a crash."""
        hashes = document_hashes(self.rag, {c.source for c in answer.citations})
        owner = owner_of(request)
        try:
            try:
                saved = self.store.append(owner, conversation or None, answer, hashes)
            except ConversationNotFoundError:  # deleted in another tab (or not this user's): a new one
                saved = self.store.append(owner, None, answer, hashes)
        except ChatStoreError as exc:
            log.warning("saving the answer failed: %s", exc)
            gr.Warning(f"The answer could not be saved: {exc}")
            return conversation, hashes
        return saved.id, hashes

    def panel(self, conversation: str | None, request: gr.Request | None) -> tuple[str, str, object]:
        """The list (the open conversation marked), its title box and its export file."""
        try:
            listed = self.store.list(owner_of(request))
        except ChatStoreError as exc:
            return render_chat_list((), error=f"Saved conversations are unavailable: {exc}"), "", None
        title = next((c.title for c in listed if c.id == conversation), "")
        return render_chat_list(listed, conversation), title, self.export(conversation, request)

    def listing(self, conversation: str | None, request: gr.Request | None = None) -> str:
        """The list alone (the page's load and timer: another tab may have saved one)."""
        try:
            return render_chat_list(self.store.list(owner_of(request)), conversation)
        except ChatStoreError as exc:
            return render_chat_list((), error=f"Saved conversations are unavailable: {exc}")

    # -- opening -----------------------------------------------------------------------------
    def open(self, conversation: object, request: gr.Request | None = None) -> tuple:
        """Show a saved conversation as it was asked: its messages, the last answer's sources
        (a document changed since is flagged), follow-ups continuing it."""
        owner = owner_of(request)
        try:
            thread = self.store.get(str(conversation), owner) if isinstance(conversation, str) else None
        except ConversationNotFoundError:
            gr.Warning("That conversation is no longer available.")
            thread = None
        except ChatStoreError as exc:
            gr.Warning(str(exc))
            thread = None
        if thread is None:
            return tuple(gr.skip() for _ in OPEN_OUTPUTS)
        chat, turns = [], []
        for saved in thread.turns:
            chat += [{"role": "user", "content": render_question(" ".join(saved.question.split()))},
                     {"role": "assistant", "content": render_answer(saved.answer)}]
            turns.append(turn_of(saved.answer, len(chat) - 1, dict(saved.document_hashes)))
        last = turns[-1] if turns else None
        citations = render_citations(len(turns) - 1 if last else None, last, self.changed(last) if last else ())
        listing, title, export = self.panel(thread.conversation.id, request)
        return (chat, turns, citations, render_viewer_message(VIEWER_HINT if last else ""), thread.conversation.id,
                title, listing, export)

    def new_chat(self, request: gr.Request | None = None) -> tuple:
        """No conversation open: the next answer starts one."""
        listing, _, _ = self.panel(None, request)
        return ([], [], render_citations(None, None), render_viewer_message(""), None, "", listing, None)

    # -- renaming, deleting, exporting -------------------------------------------------------
    def rename(self, conversation: str | None, title: str, request: gr.Request | None = None) -> tuple:
        """Retitle the open conversation; the list, the title box and the export follow."""
        if not conversation:
            gr.Warning("Open a conversation to rename it.")
            return gr.skip(), gr.skip(), gr.skip()
        try:
            self.store.rename(conversation, owner_of(request), title or "")
        except ChatStoreError as exc:
            gr.Warning(str(exc))
        return self.panel(conversation, request)

    def ask_delete(self, conversation: str | None, title: str) -> tuple:
        """Deleting asks first (the confirmation shows the title)."""
        if not conversation:
            gr.Warning("Open a conversation to delete it.")
            return gr.update(visible=False), ""
        return gr.update(visible=True), render_delete_prompt(title or "Untitled")

    def cancel_delete(self) -> tuple:
        return gr.update(visible=False), ""

    def delete(self, conversation: str | None, request: gr.Request | None = None) -> tuple:
        """Delete the open conversation (confirmed); the page starts a new chat."""
        if conversation:
            try:
                self.store.delete(conversation, owner_of(request))
            except ChatStoreError as exc:
                gr.Warning(str(exc))
            shutil.rmtree(self.exports / Path(conversation).name, ignore_errors=True)
        return self.new_chat(request) + self.cancel_delete()

    def export(self, conversation: str | None, request: gr.Request | None = None) -> str | None:
        """The open conversation as a Markdown file to download (None with none open)."""
        if not conversation:
            return None
        try:
            thread_md = self.store.export_markdown(conversation, owner_of(request))
        except ChatStoreError:
            return None
        folder = self.exports / Path(conversation).name
        shutil.rmtree(folder, ignore_errors=True)  # one file a conversation: its title may have changed
        folder.mkdir(parents=True)
        title = thread_md.splitlines()[0].removeprefix("# ")
        path = folder / f"{_SLUG.sub('-', title).strip('-')[:60] or 'conversation'}.md"
        path.write_text(thread_md, encoding="utf-8")
        return str(path)

