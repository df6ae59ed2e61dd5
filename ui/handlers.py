"""The page's event handlers, as plain methods over one `rag.Rag` (callable directly in tests).

Only the library's public API is used: `ask_stream`, `status`, `index`, `document_lines` and
`settings`. Errors from the library become messages in the page, never a crash.
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Generator, Iterator, Sequence

import gradio as gr

from rag import Answer, Citation, Note, QuestionError, Rag, RagError, generator_is_parallel, resolve_generator
from ui.conversations import SavedConversations, turn_of
from ui.conversations_view import CHANGED_NOTE
from ui.rendering import (
    SEARCHING,
    SEARCHING_WHILE_LOADING,
    VIEWER_HINT,
    is_pending,
    lines_label,
    render_answer,
    render_citations,
    render_error,
    render_generator_note,
    render_passage,
    render_question,
    render_report,
    render_status,
    render_stopped,
    render_streaming,
    render_viewer_message,
    streamed_text,
)
from ui.state import Activity, Turn, message_text

log = logging.getLogger(__name__)

HISTORY_TURNS = 6  # earlier turns handed to Rag for rewriting follow-up questions
STREAM_FRAME_SECONDS = 0.04  # at most ~25 chat updates a second while streaming
# Said at once, without a round trip through the library (which words the other checks).
EMPTY_QUESTION = "the question is empty; type a question about your documents"

# The outputs of `ChatHandlers.respond`, in order (kept as names so tests can read the tuples).
RESPOND_OUTPUTS = ("question", "chat", "turns", "citations", "viewer", "generator_note", "send", "stop",
                   "conversation", "chat_list", "chat_title", "chat_export")
STOP_OUTPUTS = ("chat", "turns", "send", "stop")

_CITE_KEY = re.compile(r"^(\d{1,6}):(\d{1,3})$")


def _buttons(*, busy: bool) -> dict:
    """Send and stop: exactly one of them usable."""
    return {"send": gr.update(interactive=not busy), "stop": gr.update(interactive=busy)}


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


class ChatHandlers:
    """The event handlers of the page, as plain methods (callable directly in tests)."""

    def __init__(self, rag: Rag, activity: Activity | None = None, saved: SavedConversations | None = None) -> None:
        self.rag = rag
        self.activity = activity or Activity()
        self.saved = saved or SavedConversations(rag)

    def concurrent_answers(self) -> int:
        """How many answers the page works on at once: as many as a local model writes at once
        (RAG_LLM_PARALLEL; Gradio's queue shows the others their place), else RAG_MAX_CONCURRENT."""
        try:
            resolved = resolve_generator(self.rag.settings.generator, self.rag.settings)
        except RagError:
            return 1
        settings = self.rag.settings
        return settings.max_concurrent if generator_is_parallel(resolved) else settings.llm_parallel

    # -- asking --------------------------------------------------------------------------------
    def ask_api(self, question: str, generator: str = "", top_k: int = 0, mode: str = "") -> dict:
        """The server's API: one complete answer as JSON (the fields of `rag.Answer`).

        From Python: `gradio_client.Client(url).predict("...", api_name="/ask")`. A bad question
        or setting comes back as an error with the product's one-line message.
        """
        try:
            stream = self.rag.ask_stream(
                question or "", generator=generator or None, top_k=int(top_k) or None, mode=mode or None
            )
            for _ in stream:
                pass
            if stream.answer is None:
                raise RagError("the answer was interrupted")
        except RagError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return stream.answer.model_dump(mode="json")

    @staticmethod
    def _respond_out(**values: object) -> tuple:
        return tuple(values.get(name, gr.skip()) for name in RESPOND_OUTPUTS)

    def respond(self, question: str, chat: list | None, turns: list | None, generator: str | None,
                top_k: float | None, conversation: str | None = None,
                request: gr.Request | None = None) -> Iterator[tuple]:
        """Stream one answer into the chat and save it in the open conversation (a new one when
        none is open); errors become a message in the chat, never a crash."""
        before, turns = list(chat or []), list(turns or [])
        if is_pending(before):  # shown as sent by the page's script (ui.layout): replaced here
            before = before[:-2]
        question = question or ""
        if not question.strip():
            gr.Warning(EMPTY_QUESTION)
            yield self._respond_out()
            return
        shown = " ".join(question.split())
        doing = SEARCHING_WHILE_LOADING if self.activity.warming else SEARCHING
        chat = before + [{"role": "user", "content": render_question(shown)}, _assistant(render_streaming("", doing))]
        yield self._respond_out(question="", chat=list(chat), viewer=render_viewer_message(""), **_buttons(busy=True))

        selection = generator or self.rag.settings.generator
        history = [(t.question, t.text) for t in turns][-HISTORY_TURNS:]
        try:
            stream = self.rag.ask_stream(
                question, generator=selection, top_k=int(top_k) if top_k else None, history=history
            )
            answer = yield from self._streamed(stream, chat)
        except QuestionError as exc:  # e.g. too long: the chat and the input stay as they were
            gr.Warning(str(exc))
            yield self._respond_out(question=question, chat=before, **_buttons(busy=False))
            return
        except RagError as exc:
            yield self._failed(chat, str(exc))
            return
        except Exception as exc:  # a bug must not take the chat down with it
            log.exception("answering %r failed", shown)
            yield self._failed(chat, f"unexpected {type(exc).__name__}; see the server log. The chat still works.")
            return
        yield self._answered(answer, selection, chat, turns, conversation, request)

    def _streamed(self, stream, chat: list) -> Generator[tuple, None, Answer]:
        """Show the pieces of `stream` as they arrive (a frame at most every STREAM_FRAME_SECONDS)."""
        text, shown = "", 0.0
        if stream.status:  # before the first word: what the model is reading
            chat[-1] = _assistant(render_streaming("", stream.status))
            yield self._respond_out(chat=list(chat))
        try:
            for piece in stream:
                if isinstance(piece, Note):  # waiting for the model: its place in the queue
                    chat[-1] = _assistant(render_streaming(text, piece.text))
                    yield self._respond_out(chat=list(chat))
                    continue
                text += piece
                if time.monotonic() - shown >= STREAM_FRAME_SECONDS:
                    chat[-1] = _assistant(render_streaming(text))
                    shown = time.monotonic()
                    yield self._respond_out(chat=list(chat))
        finally:
            # Reached early only when the stop button cancelled us: end the backend's work too.
            stream.close()
        if stream.answer is None:  # only if the stream was closed from outside
            raise RagError("the answer was interrupted")
        return stream.result()

    def _failed(self, chat: list, message: str) -> tuple:
        gr.Warning(message)
        chat[-1] = _assistant(render_error(message))
        return self._respond_out(chat=list(chat), **_buttons(busy=False))

    def _answered(self, answer: Answer, selection: str, chat: list, turns: list, conversation: str | None,
                  request: gr.Request | None) -> tuple:
        conversation, hashes = self.saved.save(answer, conversation, request)
        turn = turn_of(answer, len(chat) - 1, hashes)
        turns.append(turn)
        self.activity.resolve(selection, answer.generator)
        chat[-1] = _assistant(render_answer(answer))
        return self._respond_out(
            chat=list(chat),
            turns=turns,
            citations=render_citations(len(turns) - 1, turn),
            viewer=render_viewer_message(VIEWER_HINT),
            generator_note=self.generator_note(selection, answer.generator),
            **_buttons(busy=False),
            **dict(zip(("chat_list", "chat_title", "chat_export"), self.saved.panel(conversation, request))),
            conversation=conversation,
        )

    def stop(self, chat: list | None, turns: list | None) -> tuple:
        """After the stop button cancelled a generation: keep what arrived and say it stopped."""
        chat = list(chat or [])
        turns = list(turns or [])
        if len(chat) >= 2 and chat[-1].get("role") == "assistant":
            partial = streamed_text(message_text(chat[-1]))
            if partial is not None:
                chat[-1] = _assistant(render_stopped(partial))
                question = html.unescape(message_text(chat[-2]))
                if partial.strip():
                    turns.append(Turn(question=question, text=partial.strip(), msg=len(chat) - 1))
        buttons = _buttons(busy=False)
        return chat, turns, buttons["send"], buttons["stop"]

    # -- sources -------------------------------------------------------------------------------
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
        turn = turns[int(str(key).split(":")[0])]  # checked by _lookup
        if citation.source in self.saved.changed(turn):
            return render_viewer_message(f"{citation.source}, {lines_label(citation.start_line, citation.end_line)}: "
                                         f"{CHANGED_NOTE} They are not shown highlighted.")
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
                return render_citations(number, turn, self.saved.changed(turn)), render_viewer_message(VIEWER_HINT)
        return gr.skip(), gr.skip()

    def clear(self) -> tuple:
        """A new conversation (also ends an answer in progress)."""
        buttons = _buttons(busy=False)
        return [], [], render_citations(None, None), render_viewer_message(""), "", buttons["send"], buttons["stop"]

    # -- the side panel ------------------------------------------------------------------------
    def status_html(self) -> str:
        preparing = self.rag.planner.preparing()
        try:
            return render_status(self.rag.status(), self.activity, preparing=preparing)
        except RagError as exc:
            return render_status(None, self.activity, error=str(exc), preparing=preparing)

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
        return render_generator_note(selection, used or self.activity.resolved(selection))
