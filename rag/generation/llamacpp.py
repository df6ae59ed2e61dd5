"""Local GGUF models in-process through llama-cpp-python."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rag.config import Settings
from rag.errors import GeneratorError, GeneratorUnavailableError
from rag.types import GenerationRequest
from rag.refusal import REFUSAL

# Sampling starts from the same seed on every call: the same question and passages get the same answer.
SEED = 1234
_models: dict[tuple[str, int, int], object] = {}
_models_lock = threading.Lock()


def _load(path: Path, n_ctx: int, n_threads: int):
    key = (str(path), n_ctx, n_threads)
    with _models_lock:
        if key not in _models:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise GeneratorUnavailableError(
                    "llama-cpp-python is not installed; run `make install` (it builds it with "
                    "portable CPU flags) or choose RAG_GENERATOR=extractive"
                ) from None
            try:
                _models[key] = Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False
                )
            except Exception as exc:
                raise GeneratorUnavailableError(
                    f"RAG_LLM_MODEL_PATH: cannot load {path} ({type(exc).__name__}: {exc})"
                ) from None
        return _models[key]


class LlamaCppGenerator:
    """A GGUF model loaded once per process; calls are serialised because a context is not
    thread-safe."""

    name = "llamacpp"

    def __init__(self, model_path: Path, *, context_tokens: int = 4096, threads: int | None = None,
                 refusal_threshold: float = 1.0) -> None:
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.refusal_threshold = refusal_threshold
        self._llm = _load(model_path, context_tokens, threads or max(1, os.cpu_count() or 1))
        self._lock = threading.Lock()
        # The first token of the refusal sentence ("I"): its probability as the answer's first
        # token is how strongly the model itself thinks the passages do not answer.
        self._refusal_token = self._llm.tokenize(REFUSAL.encode(), add_bos=False, special=False)[0]  # type: ignore[attr-defined]

    @classmethod
    def from_settings(cls, settings: Settings) -> "LlamaCppGenerator":
        from rag.models import resolve_llm_path

        return cls(
            resolve_llm_path(settings.llm_model_path),
            context_tokens=settings.llm_context_tokens,
            threads=settings.llm_threads,
            refusal_threshold=settings.llm_refusal_threshold,
        )

    def _watch_first_token(self, seen: list[float]):
        """A logits processor that records the refusal token's probability at the first step."""

        def processor(_input_ids, scores):
            if not seen:
                logits = scores.astype("float64")
                weights = np.exp(logits - logits.max())
                seen.append(float(weights[self._refusal_token] / weights.sum()))
            return scores

        return processor

    def refusal_probability(self, request: GenerationRequest) -> float:
        """The probability the model gives to opening its answer with the refusal (one token
        generated; what the refusal check compares with RAG_LLM_REFUSAL_THRESHOLD)."""
        from llama_cpp import LogitsProcessorList

        seen: list[float] = []
        with self._lock:
            self._llm.create_chat_completion(  # type: ignore[attr-defined]
                messages=[m.model_dump() for m in request.messages], max_tokens=1, temperature=0.0,
                seed=SEED, logits_processor=LogitsProcessorList([self._watch_first_token(seen)]),
            )
        return seen[0]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        from llama_cpp import LogitsProcessorList

        with self._lock:
            seen: list[float] = []
            try:
                pieces = self._llm.create_chat_completion(  # type: ignore[attr-defined]
                    messages=[m.model_dump() for m in request.messages],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    seed=SEED,
                    logits_processor=LogitsProcessorList([self._watch_first_token(seen)]),
                    stream=True,
                )
                for piece in pieces:
                    # `seen` is filled when the first token is sampled, before its piece arrives.
                    if seen and seen[0] >= self.refusal_threshold:
                        pieces.close()
                        yield REFUSAL
                        return
                    delta = piece["choices"][0].get("delta", {})
                    text = delta.get("content")
                    if text:
                        yield text
            except GeneratorError:
                raise
            except Exception as exc:
                raise GeneratorError(
                    f"the local model failed while answering ({type(exc).__name__}: {exc})"
                ) from None
