"""Offline retrieval-augmented question answering with line-exact citations.

    from rag import ask
    answer = ask("Which Qwen3 variation is described as coding-proficient?")
    print(answer.text, answer.citations)

How one question is answered, stage by stage (each a module named for its role):

1. retrieve  `rag.retrieval`     Retriever.search -> list[Hit]  (dense + BM25, fused)
2. select    `rag.selection`     select(question, hits) -> Selection  (the sentences that answer)
   decide    `rag.answerability` decide(..., reading) -> Verdict  (refuse when the sentences do not
                                 answer; `rag.judge`: the model's one-pass yes/no reading)
3. prompt    `rag.prompting`     build_request(...) -> GenerationRequest
4. generate  `rag.generation`    Generator.stream(request) -> text pieces  (llamacpp, openai,
                                 extractive; FallbackGenerator, DeadlineGenerator)
5. assemble  `rag.assembly`      assemble(Draft) -> Answer  (markers -> verified citations;
                                 `rag.draft_check`: a draft missing the key facts is completed)
6. verify    `rag.verification`  verify(Answer) -> Answer

`rag.pipeline.Rag` ties the stages together and holds what is loaded once (its answers stream
through `rag.streaming.AnswerStream`); `rag.index_handle`
owns the build in use. How a document becomes an index: `rag.loaders` -> `rag.chunking` ->
`rag.embedding` -> `rag.indexer` -> a store (`rag.vectorstore`, `rag.faiss_folder`). The records passed
between stages are in `rag.types`; settings in `rag.config`; errors in `rag.errors`.
See docs/ARCHITECTURE.md.

The public API is what this package exports (`__all__`): programs and the browser chat (`ui/`)
import from `rag` only, never from its modules, so those can change without breaking them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import (
    ChatStoreError,
    ConversationNotFoundError,
    ConfigError,
    DatabaseUnavailableError,
    EmbeddingError,
    GeneratorError,
    GeneratorUnavailableError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexStoreError,
    LoaderError,
    QuestionError,
    RagError,
    UploadError,
)
from rag.types import Answer, Citation, Hit, IndexReport, IndexStatus, Note, Timings

__all__ = [
    "ask", "ask_stream", "Rag", "add_documents", "remove_documents", "AddResult",
    "Settings", "load_settings", "describe_report", "report_changes", "lines_label",
    "resolve_generator", "generator_is_parallel", "mount_openai_api", "shutdown", "start_worker",
    "ChatStore", "ChatStoreError", "ConversationNotFoundError", "document_hashes",
    "Answer", "Citation", "Hit", "IndexReport", "IndexStatus", "Note", "Timings",
    "RagError", "ConfigError", "LoaderError", "UploadError", "IndexStoreError", "IndexNotFoundError",
    "IndexMismatchError", "IndexCorruptError", "IndexLockedError", "DatabaseUnavailableError",
    "EmbeddingError", "QuestionError", "GeneratorError", "GeneratorUnavailableError",
]

if TYPE_CHECKING:
    from rag.chats import ChatStore, document_hashes
    from rag.config import Settings, load_settings
    from rag.documents import AddResult, add_documents, remove_documents
    from rag.generation import parallel as generator_is_parallel
    from rag.generation import resolve_name as resolve_generator
    from rag.lifecycle import shutdown, start_worker
    from rag.openai_api import mount_openai_api
    from rag.pipeline import Rag, ask, ask_stream
    from rag.reporting import describe_report, report_changes
    from rag.text import lines_label

# Public name -> (module, name inside it). Imported on first use: the pipeline pulls in
# numpy/faiss, the settings pydantic-settings, the API FastAPI, and `rag --help` must stay fast.
_LAZY = {
    "ask": ("rag.pipeline", "ask"),
    "shutdown": ("rag.lifecycle", "shutdown"),
    "start_worker": ("rag.lifecycle", "start_worker"),
    "ask_stream": ("rag.pipeline", "ask_stream"),
    "Rag": ("rag.pipeline", "Rag"),
    "add_documents": ("rag.documents", "add_documents"),
    "remove_documents": ("rag.documents", "remove_documents"),
    "AddResult": ("rag.documents", "AddResult"),
    "Settings": ("rag.config", "Settings"),
    "load_settings": ("rag.config", "load_settings"),
    "describe_report": ("rag.reporting", "describe_report"),
    "lines_label": ("rag.text", "lines_label"),
    "report_changes": ("rag.reporting", "report_changes"),
    # The backend a generator name stands for (`auto` -> openai, llamacpp or extractive), and
    # whether that backend answers several questions at once (a local model reads one at a time).
    "resolve_generator": ("rag.generation", "resolve_name"),
    "generator_is_parallel": ("rag.generation", "parallel"),
    "mount_openai_api": ("rag.openai_api", "mount_openai_api"),
    # Saved conversations (the page's side panel, `rag chats`): one SQLite file beside the index.
    "ChatStore": ("rag.chats", "ChatStore"),
    "document_hashes": ("rag.chats", "document_hashes"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module, attribute = _LAZY[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(name)
