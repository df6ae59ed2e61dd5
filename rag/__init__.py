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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.errors import RagError
from rag.types import Answer, Citation, Hit, IndexReport, IndexStatus

__all__ = [
    "ask", "ask_stream", "add_documents", "remove_documents",
    "Answer", "Citation", "Hit", "IndexReport", "IndexStatus", "RagError", "Rag",
]

if TYPE_CHECKING:
    from rag.pipeline import Rag, ask, ask_stream

_LAZY = {"ask": "rag.pipeline", "ask_stream": "rag.pipeline", "Rag": "rag.pipeline",
         "add_documents": "rag.documents", "remove_documents": "rag.documents"}


def __getattr__(name: str) -> Any:
    # The pipeline pulls in numpy/faiss; import it on first use so `rag --help` stays fast.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
