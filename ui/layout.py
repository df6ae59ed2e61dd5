"""The chat page: its components, their stable element ids, and which handler each event calls."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from rag import Rag, Settings
from ui.conversations import DELETE_OUTPUTS, OPEN_OUTPUTS, SavedConversations
from ui.documents import REMOVE_OUTPUTS, UPLOAD_OUTPUTS, DocumentHandlers
from ui.documents_view import render_uploads_off, upload_help
from ui.handlers import RESPOND_OUTPUTS, STOP_OUTPUTS, ChatHandlers
from ui.rendering import SENDING, render_citations, render_streaming, render_viewer_message
from ui.state import Activity

TITLE = "Ask your documents"
STATUS_REFRESH_SECONDS = 4.0

THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    radius_size="md",
    # System fonts only: the page must not reach out to a font CDN.
    font=["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)
CSS = Path(__file__).with_name("style.css").read_text(encoding="utf-8")

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

# Saved conversations: a click on a row opens it (the id is checked against the user server-side).
_CHATS_JS = """
element.addEventListener('click', (event) => {
  const row = event.target.closest('[data-chat]');
  if (!row || !element.contains(row)) return;
  trigger('click', { chat: row.dataset.chat });
});
"""

# Remove buttons in the documents list: one delegated listener, like the source cards.
_REMOVE_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('[data-remove]');
  if (!button || !element.contains(button)) return;
  trigger('click', { remove: button.dataset.remove });
});
"""

# Run in the browser the moment a question is sent, before the server has started on it: the
# question and a note that it was sent, so the page responds at once however busy the server is
# (at start it loads its models). The answer's handler replaces both (ui.rendering.is_pending).
# Nothing is added for an empty question or while an answer is still arriving. Gradio hands the
# chat over as messages whose content is a list of parts.
_SENDING_JS = """
(question, chat) => {
  chat = chat || [];
  const words = (question || '').trim().split(/\\s+/).join(' ');
  const text = (m) => Array.isArray(m.content) ? m.content.map((p) => p.text || '').join('') : String(m.content || '');
  const last = chat[chat.length - 1];
  if (!words || (last && last.role === 'assistant' && /rag-(thinking|cursor)/.test(text(last)))) return [question, chat];
  const escaped = words.replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;'})[c]);
  const message = (role, html) => ({role, content: [{type: 'text', text: html}], metadata: null, options: null});
  return [question, [...chat, message('user', escaped), message('assistant', NOTE)]];
}
""".replace("NOTE", json.dumps(render_streaming("", SENDING)))

Components = dict[str, gr.components.Component]


def sent(evt: gr.EventData, key: str) -> object:
    """A value the page's script sent with an event (`trigger('click', {key: ...})`), read as
    Gradio documents it (`evt.key`); None when the event carried no such value."""
    try:
        return getattr(evt, key)
    except (AttributeError, TypeError):  # TypeError: an event sent with no data at all
        return None


def build_app(rag: Rag, *, activity: Activity | None = None) -> gr.Blocks:
    """The chat page over one Rag. Launch it with `launch(**launch_options(rag.settings))` (in
    ui.serving) for the theme and styles (Gradio 6 takes them at launch)."""
    saved = SavedConversations(rag)
    handlers = ChatHandlers(rag, activity, saved)
    choices = rag.available_generators()
    if rag.settings.generator not in choices:
        choices.append(rag.settings.generator)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.HTML(_INTRO, elem_id="header", js_on_load=None)
        page: Components = {"turns": gr.State([]), "conversation": gr.State(None)}
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=480):
                page |= _chat_column()
            with gr.Column(scale=3, min_width=300, elem_id="side-panel"):
                page |= _conversations_panel()
                page |= _side_panel(rag.settings, choices)
                page |= _documents_panel(rag.settings)
        page["timer"] = gr.Timer(STATUS_REFRESH_SECONDS)
        answering = _wire_chat(page, handlers)
        _wire_conversations(demo, page, saved, answering)
        _wire_side_panel(demo, page, handlers, rag.settings)
        _wire_documents(demo, page, DocumentHandlers(rag), handlers)
        gr.api(handlers.ask_api, api_name="ask", api_description="Answer a question from the documents, "
               "with citations (file, lines, verified quote); JSON of rag.Answer.")
    return demo


def _chat_column() -> Components:
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
    citations = gr.HTML(render_citations(None, None), elem_id="answer-citations", js_on_load=_CITATIONS_JS)
    viewer = gr.HTML(render_viewer_message(""), elem_id="passage-viewer", js_on_load=None)
    return {"chat": chat, "question": question, "send": send, "stop": stop, "clear": clear,
            "citations": citations, "viewer": viewer}


def _side_panel(settings: Settings, choices: list[str]) -> Components:
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
        1, max(20, settings.top_k), value=settings.top_k, step=1, label="Passages (top-k)", elem_id="top-k",
    )
    return {"status": status, "rebuild": rebuild, "report": report, "generator": generator,
            "generator_note": generator_note, "top_k": top_k}


def _wire_chat(page: Components, handlers: ChatHandlers) -> gr.events.Dependency:
    """Asking, stopping, opening sources, new chat (private: the page's events are not the API)."""
    chat, turns, citations, viewer = page["chat"], page["turns"], page["citations"], page["viewer"]
    sending = gr.on(
        triggers=[page["send"].click, page["question"].submit],
        fn=None,
        js=_SENDING_JS,
        inputs=[page["question"], chat],
        outputs=[page["question"], chat],
        show_progress="hidden",
        api_visibility="private",
    )
    answering = sending.then(
        fn=handlers.respond,
        inputs=[page["question"], chat, turns, page["generator"], page["top_k"], page["conversation"]],
        outputs=[page[name] for name in RESPOND_OUTPUTS],
        show_progress="hidden",
        trigger_mode="once",
        concurrency_limit=handlers.concurrent_answers(),
        api_visibility="private",
    )
    page["stop"].click(
        handlers.stop,
        inputs=[chat, turns],
        outputs=[page[name] for name in STOP_OUTPUTS],
        cancels=[answering],
        queue=False,
        api_visibility="private",
    )

    def open_citation(turn_list: list, evt: gr.EventData) -> str:
        return handlers.open_citation(sent(evt, "cite"), turn_list)

    def select_message(turn_list: list, evt: gr.SelectData) -> tuple[str, str]:
        return handlers.select_message(evt.index, turn_list)

    citations.click(open_citation, inputs=[turns], outputs=[viewer], api_visibility="private")
    chat.select(select_message, inputs=[turns], outputs=[citations, viewer], api_visibility="private")
    cleared = [chat, turns, citations, viewer, page["question"], page["send"], page["stop"]]
    page["clear"].click(handlers.clear, outputs=cleared, cancels=[answering], api_visibility="private")
    # The chat's own trash icon: forget the conversation behind it too.
    chat.clear(handlers.clear, outputs=cleared, cancels=[answering], api_visibility="private")
    return answering


def _conversations_panel() -> Components:
    """The saved conversations: the list, and the open one's title, rename, delete and export."""
    parts: Components = {}
    with gr.Accordion("Conversations", open=True, elem_id="chats"):
        parts["chat_list"] = gr.HTML("", elem_id="chat-list", js_on_load=_CHATS_JS)
        with gr.Row(equal_height=True):
            parts["chat_title"] = gr.Textbox(show_label=False, placeholder="Open a conversation to rename it",
                                             elem_id="chat-title", scale=4, min_width=120, container=False, max_lines=1)
            parts["chat_rename"] = gr.Button("Rename", elem_id="chat-rename", size="sm", scale=1, min_width=70)
        with gr.Row():
            parts["chat_export"] = gr.DownloadButton("Export Markdown", elem_id="chat-export", size="sm", min_width=90)
            parts["chat_delete"] = gr.Button("Delete", elem_id="chat-delete", variant="stop", size="sm", min_width=70)
        with gr.Group(visible=False, elem_id="chat-delete-confirm") as parts["delete_confirm"]:
            parts["delete_prompt"] = gr.HTML("", elem_id="chat-delete-prompt", js_on_load=None)
            with gr.Row():
                parts["delete_yes"] = gr.Button("Delete", elem_id="chat-delete-yes", variant="stop", size="sm")
                parts["delete_no"] = gr.Button("Cancel", elem_id="chat-delete-no", variant="secondary", size="sm")
    return parts


def _wire_conversations(demo: gr.Blocks, page: Components, saved: SavedConversations,
                        answering: gr.events.Dependency) -> None:
    """Open (cancelling an answer in progress), new chat, rename, delete (confirmed), and the list
    (on load and on the timer, so another tab's answers appear)."""
    quiet: dict = {"show_progress": "hidden", "api_visibility": "private"}
    conversation, listing = page["conversation"], page["chat_list"]
    opened = [page[name] for name in OPEN_OUTPUTS]

    def open_chat(request: gr.Request, evt: gr.EventData) -> tuple:
        return saved.open(sent(evt, "chat"), request)

    def new_chat(request: gr.Request) -> tuple:
        return saved.new_chat(request)[OPEN_OUTPUTS.index("conversation"):]

    listing.click(open_chat, outputs=opened, cancels=[answering], **quiet)
    for cleared in (page["clear"].click, page["chat"].clear):
        cleared(new_chat, outputs=opened[OPEN_OUTPUTS.index("conversation"):], **quiet)
    renamed = [listing, page["chat_title"], page["chat_export"]]
    page["chat_rename"].click(saved.rename, inputs=[conversation, page["chat_title"]], outputs=renamed, **quiet)
    page["chat_title"].submit(saved.rename, inputs=[conversation, page["chat_title"]], outputs=renamed, **quiet)
    confirm = [page[name] for name in DELETE_OUTPUTS]
    page["chat_delete"].click(saved.ask_delete, inputs=[conversation, page["chat_title"]], outputs=confirm, **quiet)
    page["delete_no"].click(saved.cancel_delete, outputs=confirm, **quiet)
    page["delete_yes"].click(saved.delete, inputs=[conversation], outputs=opened + confirm, cancels=[answering],
                             **quiet)
    page["timer"].tick(saved.listing, inputs=[conversation], outputs=[listing], **quiet)
    demo.load(saved.listing, inputs=[conversation], outputs=[listing], **quiet)


def _wire_side_panel(demo: gr.Blocks, page: Components, handlers: ChatHandlers, settings: Settings) -> None:
    """Rebuild, the generator note, and the index status (refreshed by a timer and on load)."""
    status, note = page["status"], page["generator_note"]
    page["rebuild"].click(handlers.rebuild, outputs=[page["report"], status], api_visibility="private")
    page["generator"].change(handlers.generator_note, inputs=[page["generator"]], outputs=[note],
                             api_visibility="private")
    page["timer"].tick(handlers.status_html, outputs=[status], show_progress="hidden", api_visibility="private")
    # Filled when the page opens.
    demo.load(handlers.status_html, outputs=[status], show_progress="hidden", api_visibility="private")
    demo.load(lambda: handlers.generator_note(settings.generator), outputs=[note],
              show_progress="hidden", api_visibility="private")


def _documents_panel(settings: Settings) -> Components:
    """Add documents (drop or pick several), the indexed ones with their chunk counts, remove one."""
    parts: Components = {"remove_pending": gr.State(None)}
    with gr.Accordion("Documents", open=True, elem_id="documents"):
        if settings.uploads_enabled:
            parts["doc_files"] = gr.File(label="Add documents", file_count="multiple", elem_id="doc-upload",
                                         height=110)
            gr.HTML(upload_help(settings.upload_types, settings.upload_max_mb, settings.upload_max_total_mb),
                    js_on_load=None)
        else:
            gr.HTML(render_uploads_off(), elem_id="uploads-off", js_on_load=None)
        parts["doc_progress"] = gr.HTML("", elem_id="documents-progress", js_on_load=None)
        with gr.Group(visible=False, elem_id="remove-confirm") as parts["remove_confirm"]:
            parts["remove_prompt"] = gr.HTML("", elem_id="remove-prompt", js_on_load=None)
            with gr.Row():
                parts["remove_yes"] = gr.Button("Remove", elem_id="remove-yes", variant="stop", size="sm")
                parts["remove_no"] = gr.Button("Cancel", elem_id="remove-no", variant="secondary", size="sm")
        parts["doc_list"] = gr.HTML("", elem_id="documents-list", js_on_load=_REMOVE_JS)
    return parts


def _wire_documents(demo: gr.Blocks, page: Components, docs: DocumentHandlers, handlers: ChatHandlers) -> None:
    """Upload, remove (click, then confirm) and the list (on load, on the timer, after changes;
    the index status follows each change at once).

    The upload event gets Gradio's file data as is (`preprocess=False`) so the browser's file name
    reaches `rag.documents` to be checked; Gradio still refuses paths outside its upload folder.
    Changes wait for each other in the handlers (shown as queued), not in Gradio's queue.
    """
    listing, status = page["doc_list"], page["status"]
    quiet: dict = {"show_progress": "hidden", "api_visibility": "private"}
    if "doc_files" in page:
        files = page["doc_files"]
        added = files.upload(docs.upload, inputs=[files], outputs=[page[n] for n in UPLOAD_OUTPUTS],
                             preprocess=False, concurrency_limit=None, **quiet)
        added.then(handlers.status_html, outputs=[status], **quiet)

    def ask_remove(evt: gr.EventData) -> tuple:
        return docs.ask_remove(sent(evt, "remove"))

    confirm = [page["remove_pending"], page["remove_confirm"], page["remove_prompt"]]
    listing.click(ask_remove, outputs=confirm, api_visibility="private")
    page["remove_no"].click(docs.cancel_remove, outputs=confirm, api_visibility="private")
    removed = page["remove_yes"].click(docs.remove, inputs=[page["remove_pending"]],
                                       outputs=[page[n] for n in REMOVE_OUTPUTS], concurrency_limit=None, **quiet)
    removed.then(handlers.status_html, outputs=[status], **quiet)
    page["timer"].tick(docs.listing, outputs=[listing], **quiet)
    demo.load(docs.listing, outputs=[listing], **quiet)
