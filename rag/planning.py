"""Plan stage: what the model reads for one question, and the saved corpus state's life.

By RAG_PROMPT_CONTEXT the model reads: the whole corpus, already read once per index build and
its key/value state saved (a model with a prefix cache, a corpus that fits its context); the best
sentences with their neighbours (windowed); or the retrieved passages whole. `auto` picks by what
reading costs the backend: the corpus, else windowed, for a model that keeps what it reads (the
local model); passages for an endpoint (which reads a thousand tokens in a blink).

The corpus state is built here too: started in the background the first time a question (or
the warm-up) finds it missing, loaded ahead of the first question when it is saved, superseded
by the next build's, and abandoned when the planner closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from rag.config import Settings
from rag.corpus_cache import CorpusCache, corpus_request, could_fit, vectors_path
from rag.embedding import Embedder
from rag.excerpts import excerpts
from rag.generation import abilities
from rag.generation.base import Generator, PassageCache, PrefixCache
from rag.index_handle import IndexHandle
from rag.passage_states import PassageStates, covering, passage_request
from rag.prompting import SYSTEM_PROMPT, build_request
from rag.selection import prime, select
from rag.types import Chunk, Frozen, GenerationRequest, Hit, Selection

Context = Literal["corpus", "stitched", "windowed", "passages"]
# A stitched prompt is used while at most this many of its passages have no saved state (each
# is then read in place, a few seconds; more, and the excerpts are quicker).
MISSING_READ_IN_PLACE = 1


class ContextPlan(Frozen):
    """What the model will read for one question, and which kind of context that is."""

    context: Context
    request: GenerationRequest

    @property
    def status(self) -> str:
        """What the reader of the stream is told before the first word."""
        passages = self.request.passages
        sources = len({h.chunk.source for h in passages})
        return f"reading {len(passages)} passages from {sources} file{'s' * (sources != 1)}"


class ContextPlanner:
    """Chooses each question's context; owns the saved corpus states of the index folder."""

    def __init__(self, settings: Settings, handle: IndexHandle, embedder: Callable[[], Embedder]) -> None:
        self.settings = settings
        self.handle = handle
        self._embedder = embedder
        self.cache = CorpusCache(settings.index_dir)
        self.passage_states = PassageStates(settings.index_dir, max_bytes=settings.passage_states_mb << 20)

    def plan(self, question: str, hits: list[Hit], gen: Generator, selection: Selection | None = None) -> ContextPlan:
        """The request `gen` is given for `question`, fitted to its context window."""
        s = self.settings
        selection = selection or select(question, hits, self._embedder())
        model = abilities.prefix_cache(gen)
        corpus = self._corpus(model)
        if corpus is not None and model is not None:
            build, chunks = corpus
            state = self.cache.ready(build, model.fingerprint)
            if state is not None:
                return ContextPlan(context="corpus", request=corpus_request(
                    question, hits, selection.key, chunks, state, max_tokens=s.llm_max_tokens,
                    temperature=s.llm_temperature))
            self.cache.build_in_background(build, model.fingerprint, chunks, model.private_copy)
        stitched = self._stitched(question, hits, selection, abilities.passage_cache(gen), corpus is None)
        if stitched is not None:
            return stitched
        context = s.prompt_context
        if context in ("auto", "corpus", "stitched"):
            context = "windowed" if model is not None else "passages"
        passages, key, shown = hits, selection.key, s.prompt_highlights
        if context == "windowed" and selection.ranked:
            passages, key = excerpts(selection, hits, budget=s.prompt_budget_tokens, neighbours=s.prompt_window)
            shown = False  # the excerpts are the best sentences already
        windowed = context == "windowed" and bool(selection.ranked)
        request = build_request(question, passages, context_tokens=gen.context_tokens, max_tokens=s.llm_max_tokens,
                                temperature=s.llm_temperature, highlights=key, show_highlights=shown, brief=windowed)
        return ContextPlan(context="windowed" if windowed else "passages", request=request)

    def _stitched(self, question: str, hits: list[Hit], selection: Selection, model: PassageCache | None,
                  outgrown: bool) -> ContextPlan | None:
        """The best passages from their saved states, when asked for (stitched; auto when the
        corpus is not read whole) and the model keeps passage states; their missing states are
        read in the background (None meanwhile, when more than one is missing)."""
        s = self.settings
        wanted = s.prompt_context == "stitched" or (s.prompt_context == "auto" and outgrown)
        if not wanted or model is None or not hits or not self.handle.loaded:
            return None
        chunks = self.handle.chunks()
        chosen = covering(chunks, hits, s.prompt_passages)
        missing = self.passage_states.missing(model.fingerprint, chosen)
        build = self.handle.build
        if missing and not self.passage_states.reading_build(build):
            self.passage_states.read_in_background(model.fingerprint, [*missing, *self._newest_first(chunks)],
                                                   model.private_copy, build=build)
        if len(missing) > MISSING_READ_IN_PLACE or not chosen:
            return None
        return ContextPlan(context="stitched", request=passage_request(
            question, hits, selection.key, chosen, self.passage_states.folder, max_tokens=s.llm_max_tokens,
            temperature=s.llm_temperature, show_key=s.prompt_highlights, key_budget=s.prompt_key_tokens))

    def _newest_first(self, chunks: list[Chunk]) -> list[Chunk]:
        """`chunks` with the most recently changed documents' first (an upload is read first)."""
        def changed(source: str) -> float:
            try:
                return (self.settings.seeds_dir / source).stat().st_mtime
            except OSError:
                return 0.0

        times = {source: changed(source) for source in {c.source for c in chunks}}
        return sorted(chunks, key=lambda c: -times[c.source])

    def _corpus(self, model: PrefixCache | None) -> tuple[str, list[Chunk]] | None:
        """This build and its chunks, when the corpus prompt applies: asked for (auto, corpus), a
        model that keeps what it read, and a corpus that fits its context with a question."""
        if self.settings.prompt_context not in ("auto", "corpus") or model is None or not self.handle.loaded:
            return None
        context_tokens = model.context_tokens  # type: ignore[attr-defined]
        if not could_fit(self.handle.chunk_count, context_tokens):
            return None  # told by the count alone: a large index is never read whole for this
        chunks, build = self.handle.chunks(), self.handle.build
        if not chunks or not self.cache.fits(build, chunks, context_tokens, self.settings.llm_max_tokens):
            return None
        return build, chunks

    def prepare(self, gen: Generator) -> None:
        """Ahead of the first question: every sentence's vector at hand and the saved corpus
        state loaded (or started in the background when missing); else the passages' missing
        states started in the background and the system prompt read."""
        model = abilities.prefix_cache(gen)
        corpus = self._corpus(model)
        passages = abilities.passage_cache(gen)
        if corpus is None and passages is not None and self.settings.prompt_context in ("auto", "stitched") \
                and self.handle.loaded:
            self.passage_states.read_in_background(passages.fingerprint, self._newest_first(self.handle.chunks()),
                                                   passages.private_copy, build=self.handle.build)
            passages.start_passages()
            return
        if corpus is not None and model is not None:
            build, chunks = corpus
            embedder = self._embedder()
            prime(chunks, embedder, vectors_path(self.settings.index_dir, build, embedder.model_id))
            state = self.cache.ready(build, model.fingerprint)
            if state is not None:
                model.preload(state)
                return
            self.cache.build_in_background(build, model.fingerprint, chunks, model.private_copy)
        abilities.warm(gen, SYSTEM_PROMPT)

    def preparing(self) -> str | None:
        """What is being read in the background for faster answers, in words; None when nothing."""
        progress = self.passage_states.progress()
        if progress is not None:
            done, total = progress
            return (f"Reading the documents ahead for faster answers: {done:,} of {total:,} passages; "
                    "answers meanwhile read excerpts.")
        if self.cache.building():
            return "Reading the documents once for faster answers; answers meanwhile read excerpts."
        return None

    def close(self) -> None:
        """Abandon a corpus or passage state being read (joined) and start no other."""
        self.cache.close()
        self.passage_states.close()
