"""Offline retrieval-augmented question answering with line-exact citations.

    from rag import ask
    answer = ask("Which Qwen3 variation is described as coding-proficient?")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import RagError
from rag.types import Answer, Citation, Hit, IndexReport, IndexStatus

__all__ = ["ask", "ask_stream", "Answer", "Citation", "Hit", "IndexReport", "IndexStatus", "RagError", "Rag"]

if TYPE_CHECKING:
    from rag.pipeline import Rag, ask, ask_stream


def __getattr__(name: str) -> Any:
    # The pipeline pulls in numpy/faiss; import it on first use so `rag --help` stays fast.
    if name in {"ask", "ask_stream", "Rag"}:
        from rag import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
