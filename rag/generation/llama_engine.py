"""llama.cpp in this process: its log, its models and contexts, and freeing them in order.

The one module that touches llama-cpp-python's process-wide switches and private fields:

- **Output.** With `verbose=False` the binding silences llama.cpp by pointing the process's file
  descriptors 1 and 2 at /dev/null around model and context creation (`os.dup2`). That is
  process-wide: whatever another thread prints meanwhile is lost, and two loads overlapping
  restore each other's /dev/null, silencing stdout for good. Here llama.cpp's log goes to the
  `rag.llama` logger through `llama_log_set` (quiet unless RAG_LOG_LEVEL=debug), and the
  binding's suppressor is made a no-op before the first model loads: nothing redirects a file
  descriptor, ever.
- **Stopping.** Every context carries an abort flag that llama.cpp reads between the steps of a
  decode (a plain C function reads it, so no Python runs inside llama.cpp's threads): a decode
  in progress returns within a step when its engine is closed or the process shuts down.
- **Freeing.** `rag.lifecycle` joins the background work, then closes private contexts, then
  the shared models, before the interpreter tears down.
- **Private fields.** Saving and restoring a prefix's key/value state needs the context pointer and
  the token list the high-level `Llama` keeps to itself; `Engine` is the one class that reaches them.
- **Sequences.** A context holds a few sequences over one key/value store: 0 answers, 1 carries a
  saved passage's state in and out, 2 re-reads one token inside 0 (`append_state`, `replace_token`).
- **Answers first.** Background reads yield to a shared model's answers, within a share (llama_priority).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from rag import lifecycle
from rag.errors import GeneratorError, GeneratorUnavailableError
from rag.generation import llama_priority as priority

log = logging.getLogger("rag.llama")
_LEVELS = {0: logging.CRITICAL, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.DEBUG}

_lock = threading.Lock()
_shared: dict[tuple, "Engine"] = {}
_private: list["Engine"] = []
_hooks: dict[str, object] = {}  # the C callbacks, kept alive for as long as llama.cpp may call them
_aborting: set[int] = set()  # engines told to stop and not yet freed
# Sequence ids of a context (see the module's docstring).
ANSWER_SEQ, LOAD_SEQ, PATCH_SEQ = 0, 1, 2
SEQUENCES = 3


def configure(level: str) -> None:
    """How much of llama.cpp's own log to show: everything at `debug`, nothing otherwise (it
    reports a model's quirks as errors at every load; a real failure reaches the user as an
    exception of ours)."""
    log.setLevel(logging.DEBUG if level.lower() == "debug" else logging.CRITICAL + 1)


def _install() -> None:
    """Route llama.cpp's log to `logging` and disarm the binding's fd redirection (once)."""
    if _hooks:
        return
    import llama_cpp
    from llama_cpp import _utils

    pending: list[str] = []
    last = [logging.INFO]

    @llama_cpp.llama_log_callback
    def to_logging(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        # Level 5 continues the previous message; a message ends with a newline.
        if level != 5:
            last[0] = _LEVELS.get(level, logging.DEBUG)
        pending.append(text.decode("utf-8", errors="replace"))
        if pending[-1].endswith("\n"):
            message, pending[:] = "".join(pending).rstrip(), []
            # An aborted decode reports itself as an error: expected while closing, so debug then.
            level = logging.DEBUG if _aborting and last[0] > logging.DEBUG else last[0]
            if message and log.isEnabledFor(level):
                log.log(level, "%s", message)

    if log.level == logging.NOTSET:
        configure("warning")
    llama_cpp.llama_log_set(to_logging, None)
    _utils.suppress_stdout_stderr.__enter__ = lambda self: self  # type: ignore[method-assign]
    _utils.suppress_stdout_stderr.__exit__ = lambda self, *exc: None  # type: ignore[method-assign]
    # A decode reads its context's flag between steps through libc's strlen: "" goes on, "\1" stops.
    _hooks["abort"] = llama_cpp.ggml_abort_callback(ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value)
    _hooks["log"] = to_logging
    lifecycle.on_stop(abort_all)
    lifecycle.on_release(close_all)


def abort_hook():
    """The C function a context reads its abort flag with (see above)."""
    return _install() or _hooks["abort"]


def load(path: Path, *, n_ctx: int, n_threads: int, n_batch: int, flash_attn: bool,
         shared: bool = True) -> "Engine":
    """The model at `path` with a context of `n_ctx` tokens: loaded once per process and settings
    (`shared=False`: a context of its own, closed by its owner)."""
    key = (str(path), n_ctx, n_threads, n_batch, flash_attn)
    with _lock:
        if lifecycle.stopping():
            raise GeneratorUnavailableError("the local model is not loaded: the process is stopping")
        if shared and key in _shared and not _shared[key].closed:
            return _shared[key]
        try:
            from llama_cpp import Llama
        except ImportError:
            raise GeneratorUnavailableError(
                "llama-cpp-python is not installed; run `make install` (it builds it with "
                "portable CPU flags) or choose RAG_GENERATOR=extractive"
            ) from None
        _install()
        try:
            with _sequences(SEQUENCES):
                llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                            n_batch=n_batch, n_ubatch=n_batch, flash_attn=flash_attn, verbose=False)
        except Exception as exc:
            raise GeneratorUnavailableError(
                f"RAG_LLM_MODEL_PATH: cannot load {path} ({type(exc).__name__}: {exc})"
            ) from None
        engine = Engine(llm, shared=shared)
        if shared:
            _shared[key] = engine
        else:
            _private.append(engine)
        return engine


@contextmanager
def _sequences(count: int) -> Iterator[None]:
    """Contexts made meanwhile hold `count` sequences over one key/value store (the binding's
    `Llama` has no parameter for it; called with `_lock` held, so no other load sees this)."""
    import llama_cpp.llama_cpp as low

    original = low.llama_context_default_params

    def params():
        p = original()
        p.n_seq_max = count
        p.kv_unified = True
        return p

    low.llama_context_default_params = params
    try:
        yield
    finally:
        low.llama_context_default_params = original


def abort_all() -> None:
    """Make every decode in progress, in every context, return at its next step."""
    with _lock:
        engines = [*_private, *_shared.values()]
    for engine in engines:
        engine.abort()


def close_all() -> None:
    """Free every context and model: private contexts first, then the shared models."""
    with _lock:
        engines = [*_private, *_shared.values()]
        _private.clear()
        _shared.clear()
    for engine in engines:
        engine.abort()
    for engine in engines:
        engine.close()
    if _hooks:
        import llama_cpp

        llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), None)  # NULL: no Python called after this


class Engine:
    """One llama.cpp model and context; `use()` holds it (a context is not thread-safe)."""

    def __init__(self, llm, *, shared: bool) -> None:
        import llama_cpp

        self.llm = llm
        self.shared = shared
        self.closed = False
        self.lock = threading.RLock()
        self._flag = ctypes.create_string_buffer(2)
        self._closing = False  # abort() called: every decode stops for good
        self._paused = False  # pause() called: the step in flight stops, the read goes on later
        self.steps_read_again = 0  # background steps stopped for an answer and read again
        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, _hooks["abort"], ctypes.cast(self._flag, ctypes.c_void_p))
        self._prefix: tuple[str, int] | None = None

    @contextmanager
    def use(self) -> Iterator[object]:
        """The model, held by this thread until the block ends (a shared model's use makes
        background reads wait: answers come first)."""
        with self.lock:
            if self.closed:
                raise GeneratorUnavailableError("the local model was closed (the process is stopping)")
            if not self.shared:
                yield self.llm
                return
            with priority.answering():
                yield self.llm

    def abort(self) -> None:
        """Make a decode in progress (and every later one) return at its next step."""
        _aborting.add(id(self))
        self._closing = True
        self._flag[0] = b"\x01"

    def pause(self) -> None:
        """Stop a background read's step in flight (an answer needs the cores); the read waits
        and reads that step again."""
        with priority.lock:
            if not self._closing:
                self._paused = True
                self._flag[0] = b"\x01"

    @property
    def aborted(self) -> bool:
        """Told to stop for good (closing), not just paused for an answer."""
        return self._closing

    def close(self, timeout: float = lifecycle.JOIN_SECONDS) -> bool:
        """Abort, wait for the holder to let go (within `timeout`), free; False if still held."""
        self.abort()
        if not self.lock.acquire(timeout=timeout):
            log.warning("the local model is still busy after %.0f s; left to the operating system", timeout)
            return False
        try:
            if not self.closed:
                self.closed = True
                self.llm.close()
        finally:
            self.lock.release()
        with _lock:
            if self in _private:
                _private.remove(self)
        _aborting.discard(id(self))
        return True

    # -- prefix states (called with `use()` held) -----------------------------------------------
    def read(self, tokens: Sequence[int], *, background: bool = False) -> None:
        """Read `tokens` from an empty context (the state a prefix file saves)."""
        self.llm.reset()
        self._prefix = None
        self.extend(tokens, background=background)

    def extend(self, tokens: Sequence[int], *, background: bool = False) -> None:
        """Read `tokens` after what sequence 0 holds (`background`: in short steps, each waiting
        while a shared model answers)."""
        step = priority.BACKGROUND_STEP if background else max(1, len(tokens))
        with priority.reading_behind(self) if background else nullcontext():
            self._read_steps(tokens, step, background)

    def _read_steps(self, tokens: Sequence[int], step: int, background: bool) -> None:
        try:
            for start in range(0, len(tokens), step):
                while True:
                    while background and not priority.may_read(self) and not self._closing:
                        pass
                    with priority.lock:
                        self._paused = False
                        if not self._closing:
                            self._flag[0] = b"\x00"
                    try:
                        with priority.stepping(self):
                            self.llm.eval(tokens[start:start + step])
                        break
                    except RuntimeError:
                        if not self._paused or self._closing:
                            raise
                        self.steps_read_again += 1
        except RuntimeError as exc:
            self.llm.reset()
            if self.aborted:
                raise GeneratorError("stopped: the model is closing") from None
            raise GeneratorError(f"the local model could not read the prompt ({exc})") from None

    def keep(self, tokens: Sequence[int]) -> bool:
        """Make sequence 0 hold exactly `tokens` if it starts with them (what follows dropped);
        False when it does not (nothing changed)."""
        llm, n = self.llm, len(tokens)
        if llm.n_tokens < n or list(llm.input_ids[:n]) != list(tokens):
            return False
        if llm.n_tokens > n:
            llm._ctx.kv_cache_seq_rm(ANSWER_SEQ, n, -1)
            llm.n_tokens = n
        if self._prefix is not None and self._prefix[1] > n:
            self._prefix = None
        llm._requires_eval = True
        return True

    def tail_state(self, start: int) -> bytes:
        """The key/value state of sequence 0 from position `start` to its end, as bytes that
        `append_state` takes back (at any position)."""
        import llama_cpp

        ctx = self.llm._ctx.ctx
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_cp(memory, ANSWER_SEQ, LOAD_SEQ, start, -1)
        try:
            size = llama_cpp.llama_state_seq_get_size(ctx, LOAD_SEQ)
            buffer = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, LOAD_SEQ)
            if written == 0:
                raise GeneratorError("the local model could not copy a passage's state")
            return bytes(buffer)[:written]
        finally:
            llama_cpp.llama_memory_seq_rm(memory, LOAD_SEQ, -1, -1)

    def append_state(self, data: bytes, tokens: Sequence[int], *, saved_at: int) -> None:
        """Put a state from `tail_state` (of `tokens`, read at position `saved_at`) at the end of
        sequence 0, its positions moved there."""
        import llama_cpp

        llm = self.llm
        ctx, at, n = llm._ctx.ctx, llm.n_tokens, len(tokens)
        if at + n > llm.n_ctx():
            raise GeneratorError(f"the passages do not fit the model's context of {llm.n_ctx()} tokens")
        memory = llama_cpp.llama_get_memory(ctx)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        try:
            if llama_cpp.llama_state_seq_set_data(ctx, buffer, len(data), LOAD_SEQ) == 0:
                raise GeneratorError("a saved passage state does not fit this model; it is read again")
            if llama_cpp.llama_memory_seq_pos_max(memory, LOAD_SEQ) != saved_at + n - 1:
                raise GeneratorError("a saved passage state does not match its text; it is read again")
            if at != saved_at:
                llama_cpp.llama_memory_seq_add(memory, LOAD_SEQ, saved_at, saved_at + n, at - saved_at)
            llama_cpp.llama_memory_seq_cp(memory, LOAD_SEQ, ANSWER_SEQ, -1, -1)
        finally:
            llama_cpp.llama_memory_seq_rm(memory, LOAD_SEQ, -1, -1)
        llm.input_ids[at:at + n] = tokens
        llm.n_tokens = at + n
        llm._requires_eval = True
        self._prefix = None

    def replace_token(self, position: int, token: int) -> None:
        """Read `token` at `position` of sequence 0 instead of the one there, attending to what
        precedes it (a passage's number, renumbered; what follows keeps its state)."""
        import llama_cpp
        from llama_cpp import _internals

        llm = self.llm
        memory = llama_cpp.llama_get_memory(llm._ctx.ctx)
        llama_cpp.llama_memory_seq_rm(memory, ANSWER_SEQ, position, position + 1)
        llama_cpp.llama_memory_seq_cp(memory, ANSWER_SEQ, PATCH_SEQ, 0, position)
        batch = _internals.LlamaBatch(n_tokens=1, embd=0, n_seq_max=1, verbose=False)
        try:
            b = batch.batch
            b.n_tokens = 1
            b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = token, position, 1, True
            b.seq_id[0][0] = PATCH_SEQ
            if llama_cpp.llama_decode(llm._ctx.ctx, b) != 0:
                if self.aborted:
                    raise GeneratorError("stopped: the model is closing")
                raise GeneratorError("the local model could not renumber a passage")
            llama_cpp.llama_memory_seq_cp(memory, PATCH_SEQ, ANSWER_SEQ, position, position + 1)
        finally:
            llama_cpp.llama_memory_seq_rm(memory, PATCH_SEQ, -1, -1)
            batch.close()
        llm.input_ids[position] = token
        llm._requires_eval = True

    def save_state(self, path: Path, tokens: Sequence[int]) -> None:
        """Save the key/value state of `tokens` (just read) to `path`."""
        import llama_cpp

        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        llama_cpp.llama_state_seq_save_file(self.llm._ctx.ctx, str(path).encode(), 0, array, len(tokens))

    def load_state(self, path: Path) -> None:
        """Make the context start with the state saved in `path`, unless it does already."""
        import llama_cpp

        if self.has_prefix(path):
            return
        llm = self.llm
        capacity = llm.n_ctx()
        array = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        llm._ctx.kv_cache_clear()
        read = llama_cpp.llama_state_seq_load_file(llm._ctx.ctx, str(path).encode(), 0, array, capacity,
                                                   ctypes.byref(count))
        if read == 0:
            llm.reset()
            self._prefix = None
            raise GeneratorError(f"cannot load the saved model state {path.name}")
        n = count.value
        llm.input_ids[:n] = np.frombuffer(array, dtype=np.intc, count=n)
        llm.n_tokens = n
        llm._requires_eval = True  # the next prompt's last token is read again for its logits
        self._prefix = (str(path), n)

    def has_prefix(self, path: Path) -> bool:
        """Whether the context still starts with the state of `path`."""
        return self._prefix is not None and self._prefix[0] == str(path) and self.llm.n_tokens >= self._prefix[1]
