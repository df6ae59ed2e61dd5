"""Local GGUF models in-process through llama-cpp-python.

What the user waits for on a CPU is the model reading its prompt, so this backend never reads the
same tokens twice: llama.cpp keeps the key/value state of the last prompt and a new prompt that
starts the same way only reads what differs (the fixed system prompt is read once, at warm-up); a
long fixed prefix (the whole corpus, see rag.corpus_cache) is saved to a file once per index build
and loaded in a fraction of a second instead of being read again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

from rag import lifecycle
from rag.config import Settings
from rag.cpus import usable_cpus
from rag.errors import GeneratorError
from rag.generation import batch_jobs, llama_engine
from rag.judge import NO_WORDS, YES_WORDS, judge_request, yes_share
from rag.passage_states import HEADER, StateFolder, block_text, state_key
from rag.refusal import REFUSAL
from rag.types import GenerationRequest, Message, Note

log = logging.getLogger(__name__)
# Sampling starts from the same seed on every call: the same question and passages get the same answer.
SEED = 1234
# Marks where a prefix ends when a chat is formatted: what follows it is the per-question part.
_SENTINEL = "Zqx sentinel question"


def model_fingerprint(path: Path) -> str:
    """A cheap identity of a model file (size and sampled bytes): a saved state made with another
    model must never be loaded."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        for offset in (0, size // 2, max(0, size - (1 << 20))):
            fh.seek(offset)
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def load_weights(settings: Settings) -> None:
    """Load the model of `settings` into this process now (the generator made later finds it)."""
    from rag.models import resolve_llm_path

    llama_engine.configure(settings.log_level)
    llama_engine.load(resolve_llm_path(settings.llm_model_path), n_ctx=settings.llm_context_tokens,
                      n_threads=settings.llm_threads or usable_cpus(), n_batch=settings.llm_batch_tokens,
                      flash_attn=settings.llm_flash_attn)


class LlamaCppGenerator:
    """A GGUF model loaded once per process (its engine serialises calls: a context is not
    thread-safe)."""

    name = "llamacpp"
    reads_cheaply = True  # a yes/no reading costs a few tokens: the context holds the prompt already

    def __init__(self, model_path: Path, *, context_tokens: int = 4096, threads: int | None = None,
                 refusal_threshold: float = 1.0, batch_tokens: int = 512, flash_attn: bool = False,
                 parallel: int = 1, shared: bool = True) -> None:
        self.model_path = model_path
        self.context_tokens = context_tokens
        self.refusal_threshold = refusal_threshold
        self._options = dict(context_tokens=context_tokens, threads=threads, refusal_threshold=refusal_threshold,
                             batch_tokens=batch_tokens, flash_attn=flash_attn, parallel=parallel)
        self._engine = llama_engine.load(model_path, n_ctx=context_tokens, n_threads=threads or usable_cpus(),
                                         n_batch=batch_tokens, flash_attn=flash_attn, shared=shared)
        self._shared = shared
        # Several answers at once (rag.generation.llama_batch) from the shared model; its private
        # copies read states in the background one at a time.
        self._batcher = batch_jobs.batcher(self._engine, slots=parallel, n_ctx=context_tokens,
                                            n_batch=batch_tokens, threads=threads or usable_cpus(),
                                            flash_attn=flash_attn) if shared and parallel > 1 else None
        self._background = not shared  # a private copy reads in the background: answers first
        self._passage_prefix: list[int] | None = None
        self._fingerprint: str | None = None
        # The first token of the refusal sentence ("I"): its probability as the answer's first
        # token is how strongly the model itself thinks the passages do not answer.
        self._refusal_token = self._tokenize(REFUSAL, bos=False)[0]
        # The answers to the yes/no question of the answerability check: words that are one token.
        self._yes_no = {w: ids[0] for w in (*YES_WORDS, *NO_WORDS) if len(ids := self._tokenize(w, bos=False)) == 1}

    @classmethod
    def from_settings(cls, settings: Settings) -> "LlamaCppGenerator":
        from rag.models import resolve_llm_path

        llama_engine.configure(settings.log_level)
        return cls(
            resolve_llm_path(settings.llm_model_path),
            context_tokens=settings.llm_context_tokens,
            threads=settings.llm_threads,
            refusal_threshold=settings.llm_refusal_threshold,
            batch_tokens=settings.llm_batch_tokens,
            flash_attn=settings.llm_flash_attn,
            parallel=settings.llm_parallel,
        )

    @property
    def _llm(self):
        """The engine's model (for inspection; the class itself reads it through `use()`)."""
        return self._engine.llm

    def _tokenize(self, text: str, *, bos: bool, special: bool = False) -> list[int]:
        with self._engine.use() as llm:  # held: a model closed meanwhile must not be read
            return llm.tokenize(text.encode(), add_bos=bos, special=special)

    def private_copy(self) -> "LlamaCppGenerator":
        """The same model in a context of its own (for work in the background that must not
        disturb the context answering questions; with answers batched, a corpus state is read as
        a job of the batch instead, which cannot starve); `close()` frees it."""
        if self._batcher is not None:
            return batch_jobs.StateReader(self, self._batcher)  # type: ignore[return-value]
        return self.private_copy_alone()

    def private_copy_alone(self) -> "LlamaCppGenerator":
        """The same model in a context of its own, never batched; `close()` frees it."""
        return LlamaCppGenerator(self.model_path, shared=False, **{**self._options, "parallel": 1})  # type: ignore[arg-type]

    def close(self) -> None:
        """Free a private copy's context now (stopping a read in progress within a step), not
        whenever the garbage collector finds the model's reference cycles. The shared model
        stays loaded until the process stops (rag.lifecycle)."""
        if not self._shared:
            self._engine.close()

    @property
    def fingerprint(self) -> str:
        """The model's identity, and the layout of the context its saved states load into (a
        state saved by a batch of N sequences loads only into one of N)."""
        if self._fingerprint is None:
            layout = f"x{self._batcher.sequences}" if self._batcher is not None else ""
            self._fingerprint = model_fingerprint(self.model_path) + layout
        return self._fingerprint

    # -- reading once ----------------------------------------------------------------------------
    def _prefix_tokens(self, system: str) -> list[int]:
        """The tokens of a chat that starts with `system`, up to where the user's words begin."""
        text = self._format([Message(role="system", content=system), Message(role="user", content=_SENTINEL)])
        # Tokenized as create_chat_completion tokenizes a whole prompt, so the prefixes match.
        return self._tokenize(text[: text.index(_SENTINEL)], bos=True, special=True)

    def _format(self, messages: list[Message]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with self._engine.use() as llm:
            formatter = Jinja2ChatFormatter(
                template=llm.metadata["tokenizer.chat_template"],
                eos_token=llm.detokenize([llm.token_eos()]).decode(errors="ignore"),
                bos_token=llm.detokenize([llm.token_bos()]).decode(errors="ignore"),
            )
            return formatter(messages=[m.model_dump() for m in messages]).prompt

    def warm(self, system: str) -> None:
        """Read the fixed start of every prompt now, so the first question pays only for its own."""
        tokens = self._prefix_tokens(system)
        if self._batcher is not None:
            self._batcher.submit(batch_jobs.Job(tokens, keep_as="chat start")).wait()
            return
        with self._engine.use():
            self._engine.read(tokens, background=self._background)

    def preload(self, path: Path) -> None:
        """Load a saved prefix state now (at start), so the first question does not wait for it."""
        if self._batcher is not None:
            self._batcher.preload(str(path))
            return
        with self._engine.use():
            self._engine.load_state(path)

    def save_prefix(self, system: str, path: Path) -> int:
        """Read a chat start (system message) once and save its key/value state to `path`
        (written aside, then renamed). Returns the number of tokens saved."""
        tokens = self._prefix_tokens(system)
        if len(tokens) + 256 > self.context_tokens:
            raise GeneratorError(f"the prefix is {len(tokens)} tokens; RAG_LLM_CONTEXT_TOKENS is {self.context_tokens}")
        tmp = path.with_name(f".{path.name}.tmp")
        with self._engine.use():
            self._engine.read(tokens, background=self._background)
            self._engine.save_state(tmp, tokens)
        tmp.replace(path)
        return len(tokens)

    # -- passages read once each (rag.passage_states) ---------------------------------------------
    def _chat_parts(self, messages: list[Message]) -> tuple[str, str]:
        """The formatted chat cut where the system message's content ends."""
        system = messages[0].content
        text = self._format([Message(role="system", content=system + _SENTINEL), *messages[1:]])
        cut = text.index(_SENTINEL)
        return text[:cut], text[cut + len(_SENTINEL):]

    def _passages_start(self) -> list[int]:
        """The tokens of a chat up to where its system message's passages begin."""
        if self._passage_prefix is None:
            head, _ = self._chat_parts([Message(role="system", content=HEADER), Message(role="user", content="?")])
            self._passage_prefix = self._tokenize(head, bos=True, special=True)
        return self._passage_prefix

    def start_passages(self) -> None:
        """Read the chat's start up to the passages now (unless the context holds it), so the
        first question over passage states reads only its own part."""
        start = self._passages_start()
        with self._engine.use():
            if not self._engine.keep(start):
                self._engine.read(start, background=self._background)

    def read_passage(self, text: str, *, background: bool = False) -> bytes:
        """Read one passage alone after the system prompt; its key/value state, as bytes."""
        start = self._passages_start()
        tokens = self._tokenize(text, bos=False)
        with self._engine.use():
            if not self._engine.keep(start):
                self._engine.read(start, background=background)
            self._engine.extend(tokens, background=background)
            data = self._engine.tail_state(len(start))
            self._engine.keep(start)
        return data

    def _stitched_prompt(self, request: GenerationRequest) -> list[int]:
        """Called with the engine held: the request's system message put together in the
        context from its passages' saved states (a passage without one is read in place), each
        renumbered; returns the whole prompt's tokens, of which only the rest is still to read."""
        folder = StateFolder(Path(request.passage_states or ""))
        start = self._passages_start()
        own = [self._tokenize(block_text(n, h.chunk), bos=False) for n, h in enumerate(request.passages, start=1)]
        _, tail = self._chat_parts(request.messages)
        prompt = [*start, *(t for block in own for t in block)]
        whole = prompt + self._tokenize(tail, bos=False, special=True)
        engine = self._engine
        if engine.keep(prompt):  # the same passages as the previous request (the reading, then the answer)
            return whole
        if not engine.keep(start):
            engine.read(start)
        renumber: list[tuple[int, int]] = []  # re-read after every state is in place: one position shift
        for number, (hit, tokens) in enumerate(zip(request.passages, own), start=1):
            saved = tokens if number == 1 else self._tokenize(block_text(1, hit.chunk), bos=False)
            differ = [i for i, (a, b) in enumerate(zip(tokens, saved)) if a != b]
            data = folder.load(state_key(self.fingerprint, hit.chunk))
            if data is not None and len(saved) == len(tokens) and len(differ) <= 1:
                at = engine.llm.n_tokens
                try:
                    engine.append_state(data, saved, saved_at=len(start))
                except GeneratorError as exc:
                    log.warning("%s", exc)
                else:
                    renumber += [(at + i, tokens[i]) for i in differ]
                    continue
            engine.extend(tokens)
        for position, token in renumber:
            engine.replace_token(position, token)
        return whole

    # -- answering -------------------------------------------------------------------------------
    def _watch_first_token(self, seen: list[list[float]], token_ids: list[int]):
        """A logits processor that records the probabilities of `token_ids` at the first step."""

        def processor(_input_ids, scores):
            if not seen:
                seen.append(batch_jobs.token_probabilities(scores, token_ids))
            return scores

        return processor

    def _prepare(self, request: GenerationRequest) -> None:
        """Called with the engine held: load the request's saved prefix when it is not in memory."""
        if request.prefix_state:
            self._engine.load_state(Path(request.prefix_state))

    def _complete(self, llm, request: GenerationRequest, **options):
        """Called with the engine held: the completion of `request` (a stream when asked), and
        how to take the text out of each piece."""
        if request.passage_states:
            return llm.create_completion(prompt=self._stitched_prompt(request), **options), _completion_text
        self._prepare(request)
        return llm.create_chat_completion(messages=[m.model_dump() for m in request.messages], **options), _chat_text

    def _job(self, request: GenerationRequest, answer: GenerationRequest, **options) -> batch_jobs.Job | None:
        """`request` (`answer`'s own or its reading) as a job of the batch (None when not batched:
        a prompt put together from passage states is read in the shared context, one at a time).
        A reading's sequence is kept for its answer."""
        if self._batcher is None or request.passage_states:
            return None
        tokens = self._tokenize(self._format(request.messages), bos=True, special=True)
        key = hashlib.sha256(answer.model_dump_json(include={"messages", "prefix_state"}).encode()).hexdigest()
        return self._batcher.submit(batch_jobs.Job(tokens, prefix_state=request.prefix_state, follows=key, **options))

    def waiting(self) -> int | None:
        """Requests waiting for the batch (None: a new one starts at once, or answers are not batched)."""
        return self._batcher.waiting() if self._batcher is not None else None

    def _first_token(self, request: GenerationRequest, token_ids: list[int],
                     answer: GenerationRequest | None = None) -> list[float]:
        """The probabilities of `token_ids` as the first token of the reply (one token generated;
        `request` is `answer`'s reading, or itself)."""
        from llama_cpp import LogitsProcessorList

        job = self._job(request, answer or request, probes=token_ids)
        if job is not None:
            job.wait()
            assert job.probabilities is not None
            return job.probabilities

        seen: list[list[float]] = []
        with self._engine.use() as llm:
            try:
                self._complete(llm, request, max_tokens=1, temperature=0.0, seed=SEED,
                               logits_processor=LogitsProcessorList([self._watch_first_token(seen, token_ids)]))
            except RuntimeError as exc:
                raise GeneratorError(f"the local model failed while reading ({exc})") from None
        return seen[0]

    def refusal_probability(self, request: GenerationRequest) -> float:
        """The probability the model gives to opening its answer with the refusal (one token
        generated; what the refusal check compares with RAG_LLM_REFUSAL_THRESHOLD)."""
        return self._first_token(request, [self._refusal_token])[0]

    def judge(self, request: GenerationRequest) -> float | None:
        """The model's share of "yes" when asked whether the passages of `request` (an answer
        request) state the answer: one short pass that reads only the yes/no line."""
        words = list(self._yes_no)
        probabilities = self._first_token(judge_request(request), [self._yes_no[w] for w in words], request)
        return yes_share(zip(words, probabilities))

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        from llama_cpp import LogitsProcessorList

        job = self._job(request, request, max_tokens=request.max_tokens, temperature=request.temperature, seed=SEED,
                        probes=[self._refusal_token])
        if job is not None:
            yield from self._batched(job)
            return

        with self._engine.use() as llm:
            seen: list[list[float]] = []
            try:
                pieces, text_of = self._complete(
                    llm, request,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    seed=SEED,
                    logits_processor=LogitsProcessorList([self._watch_first_token(seen, [self._refusal_token])]),
                    stream=True,
                )
                for piece in pieces:
                    if lifecycle.stopping():
                        pieces.close()  # the process is stopping: let go of the model at once
                        return
                    # `seen` is filled when the first token is sampled, before its piece arrives.
                    if seen and seen[0][0] >= self.refusal_threshold:
                        pieces.close()
                        yield REFUSAL
                        return
                    text = text_of(piece)
                    if text:
                        yield text
            except GeneratorError:
                raise
            except Exception as exc:
                raise GeneratorError(
                    f"the local model failed while answering ({type(exc).__name__}: {exc})"
                ) from None


    def _batched(self, job: batch_jobs.Job) -> Iterator[str]:
        """The pieces of a batched answer (its place in the queue as notes while it waits)."""
        pieces = job.pieces()
        try:
            for piece in pieces:
                if lifecycle.stopping():
                    return
                if not isinstance(piece, Note) and job.probabilities and job.probabilities[0] >= self.refusal_threshold:
                    yield REFUSAL
                    return
                yield piece
        finally:
            pieces.close()


def _chat_text(piece: dict) -> str | None:
    return piece["choices"][0].get("delta", {}).get("content")


def _completion_text(piece: dict) -> str | None:
    return piece["choices"][0].get("text")
