"""Several answers at once from the local model: continuous batching over one llama.cpp context.

On a CPU, writing one token for four answers costs little more than for one (the weights are read
once per step either way): each answer has a sequence of one context of the shared model; a step
decodes the next token of every answer being written in one batch, then a slice of each prompt.

- **Shared prefixes.** A saved state (the corpus) or a chat's fixed start is held in a sequence of
  its own (a base); an answer starts as a copy of the longest start it shares with a base or a
  free sequence (its reading pass, kept for it), and reads only the rest.
- **The same answer as alone.** Each sequence has a key/value store of its own, laid out as if it
  were alone, and its prompt is read in the same slices alone or not: llama.cpp then computes its
  tokens the same whatever else is in the batch (flash attention, when on, rounds by company).
- **Reads that cannot starve.** A state read in the background (the corpus, after a build) runs in
  a base and gets BACKGROUND_SHARE of the model's time while answers are worked on.
- **Bounded memory.** `slots` answers and BASES bases, each a store of the model's context: a
  request waits for a free sequence (told its place), one that can never fit fails at once.
- **Failures stay local.** A batch that fails is decoded again job by job; only the jobs that
  fail alone fail. A stopped job's cells are freed at the next step.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from pathlib import Path

import llama_cpp  # imported once a local model batches (rag.generation.batch_jobs.batcher)
import numpy as np

from rag import lifecycle
from rag.errors import GeneratorError
from rag.generation.batch_jobs import Job, Slot, batch_context, common_start, sampler, token_probabilities
from rag.generation.llama_priority import BACKGROUND_SHARE, BACKGROUND_STEP, PATIENCE, QUIET_SECONDS

__all__ = ["Batcher"]

log = logging.getLogger("rag.llama")

BASES = 2  # sequences holding a shared start (a saved corpus state, a chat's fixed start)
# Prompt tokens a job reads per step, alone or not (other answers' words keep coming, and its
# rounding does not depend on its company); a background read takes BACKGROUND_STEP, as one at a time.
PREFILL_STEP = 128
# A background read waits while answers are worked on, and QUIET_SECONDS after one, unless they
# have kept the model busy for PATIENCE seconds on end: then it gets BACKGROUND_SHARE of the
# model's time (it ends under any load), as one at a time (rag.generation.llama_priority).
# A reading's sequence is kept this long for its answer (which reads only its last line after it).
RESERVE_SECONDS = 3.0


class Batcher:
    """The batch of one shared model: `submit` a Job, iterate its `pieces()`."""

    def __init__(self, llm, *, slots: int, n_ctx: int, n_batch: int, threads: int, flash_attn: bool) -> None:
        self._flag = ctypes.create_string_buffer(2)
        self._model = llm._model
        self._ctx = batch_context(self._model, sequences=slots + BASES, n_ctx=n_ctx, n_batch=n_batch,
                                  threads=threads, flash_attn=flash_attn, flag=self._flag)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.capacity, self.n_batch, self.sequences = n_ctx, n_batch, slots + BASES
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [Slot(i) for i in range(slots)]
        self._bases = [Slot(slots + i) for i in range(BASES)]
        self._all = [*self._slots, *self._bases]
        self._waiting: list[Job] = []
        self._loads: list[str] = []
        self._cv = threading.Condition()
        self._closing = False
        self.closed = False
        self.steps = self.widest = 0  # steps decoded; the most jobs one step served
        self._shared_time = [0.0, 0.0]  # seconds decoding answers, and a background read, while both wait
        self._contended = False
        self._busy_since: float | None = None  # answers have kept the model busy since
        self._last_answer = 0.0  # when the model last worked on an answer
        self._reading_behind = False  # a background step is being decoded
        lifecycle.track(self)
        lifecycle.on_stop(self._abort)
        self._thread = lifecycle.start_worker(self._run, name="rag-batch")

    # -- callers --------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closing:
                raise GeneratorError("the local model is closing")
            self._waiting.append(job)
            self._number_waiting()
            if self._reading_behind and not job.background:
                self._flag[0] = b"\x01"  # an answer comes first: the background step in flight stops
            self._cv.notify_all()
        return job

    def waiting(self) -> int | None:
        """Requests waiting for a sequence; None when one is free and nobody waits."""
        with self._cv:
            if not self._waiting and any(s.job is None for s in self._slots):
                return None
            return len(self._waiting)

    def cells(self, seq_id: int) -> int:
        """The positions sequence `seq_id` holds in the context (what a job's `slot` holds)."""
        with self._cv:
            return int(llama_cpp.llama_memory_seq_pos_max(self._ctx.memory, seq_id)) + 1

    def close(self) -> None:
        """Stop every job (each fails with a plain error), join the loop, free the context."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._abort()
        if not lifecycle.join(self._thread):
            return
        if not self.closed:
            self.closed = True
            for seq in self._all:
                seq.free_sampler()
            llama_cpp.llama_batch_free(self._batch)
            self._ctx.close()

    def _abort(self) -> None:
        self._flag[0] = b"\x01"

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._closing or self._waiting or self._loads or any(s.job for s in self._all)):
                        self._cv.wait()
                    if self._closing:
                        break
                    while self._loads:
                        self._base_for(self._loads.pop(0))
                    self._drop_stopped()
                    self._admit()
                self._step()
        except Exception as exc:  # a bug must not leave callers waiting forever
            log.exception("the local model's batch stopped")
            self._fail_everything(GeneratorError(f"the local model failed ({type(exc).__name__}: {exc})"))
        else:
            self._fail_everything(GeneratorError("stopped: the model is closing"))

    def _fail_everything(self, error: GeneratorError) -> None:
        with self._cv:
            self._closing = True
            jobs = [*self._waiting, *(s.job for s in self._all if s.job)]
            self._waiting.clear()
        for job in jobs:
            job._finish(error)

    def _number_waiting(self) -> None:
        for n, job in enumerate(self._waiting, start=1):
            job.position = n

    def _drop_stopped(self) -> None:
        for job in [j for j in self._waiting if j.stopped.is_set()]:
            self._waiting.remove(job)
            job._finish()
        for seq in self._all:
            if seq.job is not None and seq.job.stopped.is_set():
                job = seq.job
                seq.clear(self._ctx.memory)
                job._finish()
        self._number_waiting()

    # -- sequences ------------------------------------------------------------------------------
    def _base_for(self, path: str) -> Slot | None:
        """The base holding the saved state at `path`, loaded now when missing (None: unreadable)."""
        base = next((b for b in self._bases if b.path == path), None)
        idle = [b for b in self._bases if b.job is None]
        if base is None and not idle:
            return None
        if base is None:
            base = min(idle, key=lambda b: b.used_at)
            if not base.load(self._ctx, path, self.capacity):
                log.warning("cannot load the saved model state %s; answers read the prompt whole", Path(path).name)
                return None
        base.used_at = time.monotonic()
        return base

    def _admit(self) -> None:
        """Give waiting jobs a sequence in order (a background read after answers), each starting
        from the longest start it shares with a base or a free sequence."""
        now = time.monotonic()
        follows = {id(j): s for j in self._waiting for s in self._slots
                   if s.job is None and s.reserved > now and j.follows is not None and s.reserved_for == j.follows}
        for job in sorted(self._waiting, key=lambda j: (id(j) not in follows, j.background)):
            if job.background:  # read into a base (it becomes one): never waits for answers to end
                free = sorted((b for b in self._bases if b.job is None), key=lambda b: b.used_at)[:1]
            else:
                free = [s for s in self._slots if s.job is None and (s.reserved <= now or s is follows.get(id(job)))]
            if not free:
                continue  # a follower after it may still have its kept sequence
            self._waiting.remove(job)
            if len(job.tokens) + job.max_tokens > self.capacity:
                job._finish(GeneratorError(
                    f"the prompt and its answer ({len(job.tokens) + job.max_tokens:,} tokens) do not fit the "
                    f"model's context of {self.capacity:,} tokens; raise RAG_LLM_CONTEXT_TOKENS"))
                continue
            if job.prefix_state:
                self._base_for(job.prefix_state)
            sources = [*(b for b in self._bases if b.tokens), *free]
            source = max(sources, key=lambda s: (common_start(s.tokens, job.tokens), s in free, s.used_at))
            shared = min(common_start(source.tokens, job.tokens), len(job.tokens) - 1)  # the last token read again
            if source in free:
                seq = source
                seq.clear(self._ctx.memory, shared)
            else:
                seq = min(free, key=lambda s: s.used_at)
                seq.copy(self._ctx.memory, source, shared)
                source.used_at = time.monotonic()
            seq.job, seq.read, seq.written, seq.next_token, seq.reserved = job, shared, 0, None, 0.0
            seq.decoder.reset()
            seq.sampler = sampler(job) if job.max_tokens else None
            seq.used_at = time.monotonic()
            job.position, job.slot = 0, seq.id
        self._number_waiting()

    # -- one step -------------------------------------------------------------------------------
    def _plan(self) -> list[tuple[Slot, list[int], bool]]:
        """What each job reads this step: (sequence, tokens, whether its last one needs logits)."""
        with self._cv:
            running = [s for s in self._all if s.job is not None]
        writing = [s for s in running if s.next_token is not None]
        reading = [s for s in running if s.next_token is None and s.read < len(s.job.tokens)]
        ahead = [s for s in reading if not s.job.background]
        room = self.n_batch - len(writing)
        plan = [(s, [s.next_token], True) for s in writing]
        busy = bool(writing or ahead)
        now = time.monotonic()
        self._last_answer = now if busy else self._last_answer
        self._busy_since = (self._busy_since or now) if busy else None
        busy = busy or now - self._last_answer < QUIET_SECONDS  # an answer's next part, a next question
        self._contended = busy and any(s.job.background for s in reading)
        behind = (self._shared_time[1] > BACKGROUND_SHARE * sum(self._shared_time)
                  or now - (self._busy_since or now) < PATIENCE)
        for seq in [*ahead, *(s for s in reading if s.job.background and not (busy and behind))]:
            if room <= 0:
                break
            job = seq.job
            share = BACKGROUND_STEP if job.background else PREFILL_STEP  # short: an answer soon waits on it
            take = job.tokens[seq.read: seq.read + min(share, room)]
            last = seq.read + len(take) == len(job.tokens)
            plan.append((seq, take, last and bool(job.probes or job.max_tokens)))
            room -= len(take)
        return plan

    def _decode(self, plan: list[tuple[Slot, list[int], bool]]) -> int:
        """Decode the plan as one batch."""
        b = self._batch
        n = 0
        for seq, tokens, logits in plan:
            start = len(seq.tokens)
            for i, token in enumerate(tokens):
                b.token[n], b.pos[n], b.n_seq_id[n] = token, start + i, 1
                b.seq_id[n][0] = seq.id
                b.logits[n] = logits and i == len(tokens) - 1
                n += 1
        b.n_tokens = n
        return llama_cpp.llama_decode(self._ctx.ctx, b)

    def _step(self) -> None:
        """One step: the next token of every answer being written, in one batch; then each
        prompt slice in a batch of its own (so it is read exactly as alone)."""
        plan = self._plan()
        if not plan:
            time.sleep(0.01)
            return
        self.steps += 1
        self.widest = max(self.widest, len(plan))
        writing = [part for part in plan if part[0].next_token is not None]
        for group in ([writing] if writing else []) + [[part] for part in plan if part[0].next_token is None]:
            started, background = time.perf_counter(), group[0][0].job.background
            with self._cv:
                self._flag[0] = b"\x01" if self._closing else b"\x00"
                self._reading_behind = background
            code = self._decode(group)
            with self._cv:
                self._reading_behind = False
            if self._contended:
                self._shared_time[background] += time.perf_counter() - started
            if code == 0:
                self._after(group)
                continue
            self._undo(group)
            if code == 2 and background and not self._closing:
                continue  # stopped for an answer: read again later
            for part in group if len(group) > 1 else []:  # again one by one: only those that fail alone fail
                if self._decode([part]) == 0:
                    self._after([part])
                    continue
                self._undo([part])
                self._fail(part[0], code)
            if len(group) == 1:
                self._fail(group[0][0], code)

    def _undo(self, plan: list[tuple[Slot, list[int], bool]]) -> None:
        for seq, _, _ in plan:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.id, len(seq.tokens), -1)

    def _fail(self, seq: Slot, code: int) -> None:
        job = seq.job
        why = "stopped: the model is closing" if code == 2 else f"the local model could not read its batch (code {code})"
        with self._cv:
            seq.clear(self._ctx.memory)
        if job is not None:
            job._finish(GeneratorError(why))

    def _after(self, plan: list[tuple[Slot, list[int], bool]]) -> None:
        """Each job's new tokens are in the context: record them, sample, hand out text."""
        index = -1
        for seq, tokens, logits in plan:
            index += len(tokens)
            job = seq.job
            assert job is not None
            seq.tokens += tokens
            if seq.next_token is None:
                seq.read += len(tokens)
            seq.next_token = None
            if not logits:
                if seq.read == len(job.tokens) and not job.max_tokens and not job.probes:
                    self._done(seq)
                continue
            if job.probes and job.probabilities is None:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, index), shape=(self._n_vocab,))
                job.probabilities = token_probabilities(row, job.probes)
            if job.max_tokens == 0:
                self._done(seq)
                continue
            token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx.ctx, index)
            seq.written += 1
            end = llama_cpp.llama_vocab_is_eog(self._vocab, token)
            if not end:
                text = seq.decoder.decode(self._model.token_to_piece(token).rstrip(b"\0"))
                if text:
                    job._out.put(text)
            if end or seq.written >= job.max_tokens:
                tail = seq.decoder.decode(b"", final=True)
                if tail:
                    job._out.put(tail)
                self._done(seq)
            else:
                seq.next_token = token
        with self._cv:
            for seq, _, _ in plan:
                if seq.job is not None and seq.job.done.is_set():
                    seq.job = None
            self._cv.notify_all()

    def _done(self, seq: Slot) -> None:
        """The job of `seq` is complete: its state saved and kept as a base when asked."""
        job = seq.job
        assert job is not None
        error = None
        if job.save_to is not None and not seq.save(self._ctx, job.save_to):
            error = GeneratorError(f"cannot save the model state to {job.save_to}")
        seq.free_sampler()
        seq.used_at = time.monotonic()
        seq.reserved = seq.used_at + RESERVE_SECONDS if job.probes and not job.max_tokens else 0.0
        seq.reserved_for = job.follows
        if job.keep_as is not None and error is None:
            with self._cv:
                self._keep(seq, job.keep_as)
        job._finish(error)

    def _keep(self, seq: Slot, name: str) -> None:
        """Make what `seq` holds a base named `name`: in place when read into a base (a background
        read), else copied in place of the least recently used idle base."""
        idle = [b for b in self._bases if b.job is None and b is not seq]
        for other in idle:
            other.path = None if other.path == name else other.path
        if seq in self._bases or not idle:
            seq.path = name if seq in self._bases else seq.path
            return
        base = min(idle, key=lambda b: b.used_at)
        base.copy(self._ctx.memory, seq, len(seq.tokens))
        base.path, base.used_at = name, time.monotonic()
        seq.clear(self._ctx.memory)

    def forget(self) -> None:
        """Drop what idle sequences and bases hold (the next requests read from the start)."""
        with self._cv:
            for seq in [s for s in self._all if s.job is None]:
                seq.clear(self._ctx.memory)

    def preload(self, path: str) -> None:
        """Load the saved state at `path` as a base now, ahead of the first request naming it."""
        with self._cv:
            self._loads.append(path)
            self._cv.notify_all()
