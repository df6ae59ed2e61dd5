"""The documents panel's handlers: add documents from the page, list them, remove one.

Every change goes through `rag.documents.add_documents` / `remove_documents`, which hold the
rules (names, types, sizes and contents checked on the server): the name and type a browser
sends are handed to them to be judged, never trusted. Only files Gradio stored in its own upload
folder are read. After a change the index handle is told, so the next question uses the new build
at once; questions asked meanwhile are answered from the previous one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rag import AddResult, IndexNotFoundError, Rag, RagError, add_documents, remove_documents
from ui.documents_view import (
    UPLOADS_OFF,
    FileState,
    IndexedDocument,
    render_document_list,
    render_file_states,
    render_remove_prompt,
    render_uploads_off,
)
from ui.gradio_private import upload_folder

log = logging.getLogger(__name__)

# The outputs of `upload` and of `remove`, in order (names so tests can read the tuples).
UPLOAD_OUTPUTS = ("doc_progress", "doc_list", "doc_files")
REMOVE_OUTPUTS = ("doc_progress", "doc_list", "remove_pending", "remove_confirm", "remove_prompt")
_MB = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """One file a browser sent: the name it gave (to be checked) and Gradio's stored copy."""

    name: str
    path: Path | None  # None when the path given is not a file in Gradio's upload folder


def received(files: object, upload_root: Path | None = None) -> list[Upload]:
    """The files of an upload event (Gradio's file data, not preprocessed, so the browser's file
    name is kept); a path outside Gradio's upload folder is never read."""
    root = (upload_root or upload_folder()).resolve()
    items = files if isinstance(files, (list, tuple)) else [files] if files else []
    uploads = []
    for item in items:
        path, name = (item.get("path"), item.get("orig_name")) if isinstance(item, dict) else (item, None)
        if not isinstance(path, str) or not path:
            continue
        stored = Path(path).resolve()
        inside = stored.is_relative_to(root) and stored != root and stored.is_file()
        shown = name if isinstance(name, str) and name else Path(path).name
        uploads.append(Upload(name=shown, path=stored if inside else None))
    return uploads


def _payload(uploads: list[Upload], per_file: int, total_limit: int) -> list[tuple[str, bytes] | Path]:
    """What `add_documents` is given: (browser's name, bytes) per file. A file over the per-file
    limit is given as its path, so the library refuses it by size without it being read; reading
    stops once the upload is over the total limit (the library then refuses it as a whole), so a
    huge upload is never held in memory."""
    items: list[tuple[str, bytes] | Path] = []
    total = 0
    for upload in uploads:
        assert upload.path is not None
        size = upload.path.stat().st_size
        if size > per_file:
            items.append(upload.path)
            continue
        items.append((upload.name, upload.path.read_bytes()))
        total += size
        if total > total_limit:
            break
    return items


def _state(upload: Upload, result: AddResult) -> FileState:
    return FileState(name=upload.name, state=result.state, chunks=result.chunks, reason=result.reason)


class DocumentHandlers:
    """The events of the documents panel, as plain methods (callable directly in tests)."""

    def __init__(self, rag: Rag) -> None:
        self.rag = rag
        # One change to the documents at a time; the others wait, shown as queued.
        self._changing = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rag.settings.uploads_enabled

    # -- the list ------------------------------------------------------------------------------
    def documents(self) -> list[IndexedDocument]:
        """The documents of the build in use, with their chunk counts (IndexNotFoundError if none)."""
        manifest = self.rag.retriever().manifest
        return [
            IndexedDocument(name=name, chunks=len(entry.chunk_ids), kind=entry.kind)
            for name, entry in sorted(manifest.documents.items())
        ]

    def listing(self) -> str:
        try:
            return render_document_list(self.documents(), can_remove=self.enabled)
        except IndexNotFoundError:
            return render_document_list(None, can_remove=False)
        except RagError as exc:
            return render_document_list(None, can_remove=False, error=str(exc))

    # -- adding --------------------------------------------------------------------------------
    def upload(self, files: object) -> Iterator[tuple]:
        """Add the files of one upload: each shown as queued or indexing, then as indexed (with its
        chunk count), skipped or refused with the reason."""
        uploads = received(files)
        if not uploads:
            yield gr.skip(), gr.skip(), None
            return
        if not self.enabled:
            states = [FileState(u.name, "refused", reason=UPLOADS_OFF) for u in uploads]
            yield render_file_states(states), gr.skip(), None
            return
        if self._changing.locked():
            yield self._progress(uploads, "queued"), gr.skip(), None
            self._wait()
        yield self._progress(uploads, "indexing"), gr.skip(), None
        with self._changing:
            states = self._add(uploads)
        yield render_file_states(states), self.listing(), gr.skip()

    def _wait(self) -> None:
        """Until the change in progress is done. The lock is never held across a `yield`: a page
        closed mid-change must not leave it taken."""
        with self._changing:
            pass

    @staticmethod
    def _progress(uploads: list[Upload], state: str) -> str:
        return render_file_states([FileState(u.name, state) for u in uploads])  # type: ignore[arg-type]

    def _add(self, uploads: list[Upload]) -> list[FileState]:
        settings = self.rag.settings
        readable = [u for u in uploads if u.path is not None]
        states: dict[int, FileState] = {
            i: FileState(u.name, "refused", reason="not a file this server received; upload it again")
            for i, u in enumerate(uploads)
            if u.path is None
        }
        try:
            items = _payload(readable, int(settings.upload_max_mb * _MB), int(settings.upload_max_total_mb * _MB))
            results = add_documents(items, settings, embedder=self.rag.embedder, warn=log.warning) if items else []
        except (RagError, OSError) as exc:
            results = [AddResult(name=u.name, state="refused", reason=str(exc)) for u in readable]
        finally:
            self.rag.handle.refresh()
        positions = [i for i, u in enumerate(uploads) if u.path is not None]
        for i, result in zip(positions, results):
            states[i] = _state(uploads[i], result)
        for i in positions[len(results):]:  # not read: the upload was over its total limit
            states[i] = FileState(uploads[i].name, "refused", reason="not added: the upload is over its total limit")
        return [states[i] for i in range(len(uploads))]

    # -- removing ------------------------------------------------------------------------------
    def ask_remove(self, name: object) -> tuple:
        """A remove button was clicked: ask to confirm (the name comes from the client: checked)."""
        if not self.enabled:
            return None, gr.update(visible=False), render_uploads_off()
        try:
            known = {d.name for d in self.documents()}
        except RagError:
            known = set()
        if not isinstance(name, str) or name not in known:
            return None, gr.update(visible=False), ""
        return name, gr.update(visible=True), render_remove_prompt(name)

    def cancel_remove(self) -> tuple:
        return None, gr.update(visible=False), ""

    def remove(self, pending: object) -> Iterator[tuple]:
        """Remove the confirmed document from the seeds folder and the index."""
        if not isinstance(pending, str) or not pending:
            yield gr.skip(), gr.skip(), None, gr.update(visible=False), ""
            return
        hidden = (None, gr.update(visible=False), "")
        if self._changing.locked():
            yield render_file_states([FileState(pending, "queued")], "Remove"), gr.skip(), *hidden
            self._wait()
        yield render_file_states([FileState(pending, "removing")], "Remove"), gr.skip(), *hidden
        with self._changing:
            state = self._remove(pending)
        yield render_file_states([state], "Remove"), self.listing(), *hidden

    def _remove(self, name: str) -> FileState:
        try:
            remove_documents([name], self.rag.settings, embedder=self.rag.embedder, warn=log.warning)
            return FileState(name, "removed")
        except RagError as exc:
            return FileState(name, "failed", reason=str(exc))
        finally:
            self.rag.handle.refresh()
