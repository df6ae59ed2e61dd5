"""The requests of the local model's batch (rag.generation.llama_batch): a Job (what to read
and write, and its text as it comes), a Slot (one sequence of the batch's context and the job it
serves), and the StateReader that reads a corpus state as a job of the batch."""

from __future__ import annotations

import codecs
import ctypes
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from rag.errors import GeneratorError
from rag.streaming import waiting_note
from rag.types import Note

# Seconds between two notes of a job's place while it waits (its reader also notices a stop then).
NOTE_SECONDS = 0.5
_END = object()


class Job:
    """One request to the batch: read `tokens`, then write up to `max_tokens` (0: read only).

    `probes`: token ids whose probabilities as the first written token are recorded in
    `probabilities` (a yes/no reading). `save_to`: a read-only job's state is saved there.
    `keep_as`: what it read is then kept as a base under that name (a saved state's final path, so
    requests naming it share it). `background`: read at a small share of every step while answers
    are written (a state ahead of need).
    """

    def __init__(self, tokens: Sequence[int], *, max_tokens: int = 0, temperature: float = 0.0, seed: int = 0,
                 probes: Sequence[int] = (), prefix_state: str | None = None, save_to: Path | None = None,
                 keep_as: str | None = None, follows: str | None = None, background: bool = False) -> None:
        if not tokens:
            raise GeneratorError("nothing to read")
        self.tokens = list(tokens)
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self.probes, self.prefix_state, self.save_to, self.keep_as = list(probes), prefix_state, save_to, keep_as
        self.background = background
        self.follows = follows  # a reading's sequence is kept for the job of the same key (its answer)
        self.probabilities: list[float] | None = None
        self.position = 0  # while waiting: 1 + the jobs ahead of it; 0 once in the batch
        self.slot: int | None = None  # the sequence it was given
        self.error: GeneratorError | None = None
        self.done = threading.Event()
        self.stopped = threading.Event()
        self._out: queue.Queue = queue.Queue()

    def stop(self) -> None:
        """Stop (the caller is gone): its cells are freed at the next step."""
        self.stopped.set()

    def wait(self) -> None:
        """Until done; raises its error."""
        for _ in self.pieces():
            pass

    def pieces(self) -> Iterator[str]:
        """The text as it is written; while the job waits for room, a `Note` of its place every
        NOTE_SECONDS (no text). Raises the job's error; closing the iterator stops the job."""
        try:
            while True:
                try:
                    item = self._out.get(timeout=NOTE_SECONDS)
                except queue.Empty:
                    if self.position > 0:
                        yield Note(waiting_note(self.position - 1))
                    continue
                if item is _END:
                    break
                yield item
            if self.error is not None:
                raise self.error
        finally:
            if not self.done.is_set():
                self.stop()

    def _finish(self, error: GeneratorError | None = None) -> None:
        self.error = error
        self.done.set()
        self._out.put(_END)


class Slot:
    """A sequence of the context: what it holds (positions 0..n-1) and its job, if any."""

    def __init__(self, seq_id: int) -> None:
        self.id = seq_id
        self.tokens: list[int] = []
        self.job: Job | None = None
        self.path: str | None = None  # a base: the saved state (or fixed start) it holds
        self.used_at = 0.0
        self.reserved = 0.0  # until then, kept for the answer that follows its reading
        self.reserved_for: str | None = None
        # The job's progress: prompt tokens in the context, the token to read next, what it wrote.
        self.read = 0
        self.next_token: int | None = None
        self.written = 0
        self.sampler = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def clear(self, memory, keep: int = 0) -> None:
        """Drop what it holds from position `keep` on (and its job)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(memory, self.id, keep, -1)
        self.tokens = self.tokens[:keep]
        self.job = None
        if keep == 0:
            self.path = None
        self.free_sampler()

    def copy(self, memory, source: "Slot", keep: int) -> None:
        """Hold the first `keep` positions of `source` (a sequence's store is its own, so it is
        copied whole, then cut)."""
        import llama_cpp

        self.clear(memory)
        if keep:
            llama_cpp.llama_memory_seq_cp(memory, source.id, self.id, -1, -1)
            llama_cpp.llama_memory_seq_rm(memory, self.id, keep, -1)
            self.tokens = source.tokens[:keep]

    def load(self, context, path: str, capacity: int) -> bool:
        """Hold the state saved at `path` (False, holding nothing, when it cannot be loaded)."""
        import llama_cpp

        self.clear(context.memory)
        array = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        if llama_cpp.llama_state_seq_load_file(context.ctx, path.encode(), self.id, array, capacity,
                                                 ctypes.byref(count)) == 0:
            self.clear(context.memory)
            return False
        self.tokens, self.path = list(array[: count.value]), path
        return True

    def save(self, context, path: Path) -> bool:
        """Save what it holds to `path`."""
        import llama_cpp

        array = (llama_cpp.llama_token * len(self.tokens))(*self.tokens)
        return llama_cpp.llama_state_seq_save_file(context.ctx, str(path).encode(), self.id, array,
                                                   len(self.tokens)) != 0

    def free_sampler(self) -> None:
        if self.sampler is not None:
            import llama_cpp

            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None


def token_probabilities(logits, token_ids: Sequence[int]) -> list[float]:
    """The probabilities of `token_ids` as the next token, from the model's `logits` (a softmax)."""
    weights = np.exp(logits.astype("float64") - float(logits.max()))
    total = weights.sum()
    return [float(weights[t] / total) for t in token_ids]


def common_start(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common start of `a` and `b`."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if differ.size else n


def batch_context(model, *, sequences: int, n_ctx: int, n_batch: int, threads: int, flash_attn: bool, flag):
    """A context of `model` with `sequences` sequences, each a key/value store of `n_ctx` cells
    of its own (not one store for all: see rag.generation.llama_batch); a decode stops when
    `flag` (a C string) is set."""
    import llama_cpp
    from llama_cpp import _internals

    from rag.generation import llama_engine

    params = llama_cpp.llama_context_default_params()
    params.n_batch = params.n_ubatch = n_batch
    params.n_threads = params.n_threads_batch = threads
    params.n_seq_max, params.n_ctx, params.kv_unified = sequences, n_ctx * sequences, False
    if not flash_attn:  # on, a batch's company changes an answer's rounding
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    llama_cpp.llama_set_abort_callback(context.ctx, llama_engine.abort_hook(), ctypes.cast(flag, ctypes.c_void_p))
    return context


def sampler(job: Job):
    """The sampling chain of `job`: greedy at temperature 0, else the high-level binding's
    defaults (top-k 40, top-p 0.95, min-p 0.05), so an answer reads the same either way."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if job.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    for step in (llama_cpp.llama_sampler_init_top_k(40), llama_cpp.llama_sampler_init_top_p(0.95, 1),
                 llama_cpp.llama_sampler_init_min_p(0.05, 1), llama_cpp.llama_sampler_init_temp(job.temperature),
                 llama_cpp.llama_sampler_init_dist(job.seed)):
        llama_cpp.llama_sampler_chain_add(chain, step)
    return chain


class StateReader:
    """What the corpus cache reads a state with when answers are batched: the state is read as a
    background job of the batch (a slice at every step, so it finishes under any load), saved,
    and kept in the batch as a base. Passage states are read by a private copy, made on demand."""

    def __init__(self, generator, batch) -> None:
        self._generator, self._batch = generator, batch
        self._job: Job | None = None
        self._copy = None
        self.fingerprint = generator.fingerprint
        self.context_tokens = generator.context_tokens

    def save_prefix(self, system: str, path: Path) -> int:
        tokens = self._generator._prefix_tokens(system)
        tmp = path.with_name(f".{path.name}.tmp")
        self._job = self._batch.submit(Job(tokens, save_to=tmp, keep_as=str(path), background=True))
        self._job.wait()
        tmp.replace(path)
        return len(tokens)

    def _private(self):
        if self._copy is None:
            self._copy = self._generator.private_copy_alone()
        return self._copy

    def read_passage(self, text: str, *, background: bool = False) -> bytes:
        return self._private().read_passage(text, background=background)

    def start_passages(self) -> None:
        self._private().start_passages()

    def close(self) -> None:
        if self._job is not None:
            self._job.stop()
        if self._copy is not None:
            self._copy.close()

_lock = threading.Lock()
_batchers: dict = {}


def batcher(engine, *, slots: int, n_ctx: int, n_batch: int, threads: int, flash_attn: bool):
    """The batch of the shared model `engine` (one per model and process): `slots` answers at
    once, each in a store of `n_ctx` cells of its own."""
    from rag.generation.llama_batch import Batcher

    with _lock:
        found = _batchers.get(id(engine))
        if found is None or found.closed:
            found = _batchers[id(engine)] = Batcher(engine.llm, slots=slots, n_ctx=n_ctx,
                                                    n_batch=n_batch, threads=threads, flash_attn=flash_attn)
        return found
