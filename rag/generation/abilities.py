"""The one place a generator's optional abilities are checked (see rag.generation.base)."""

from __future__ import annotations

from rag.generation.base import Closable, Generator, PassageCache, PrefixCache, Reader, Warmable


def prefix_cache(gen: Generator) -> PrefixCache | None:
    """`gen` as a model that saves and reloads what it read, if it is one."""
    return gen if isinstance(gen, PrefixCache) else None  # type: ignore[return-value]


def passage_cache(gen: object) -> PassageCache | None:
    """`gen` as a model that saves each passage's state and starts a prompt from them, if it is one."""
    return gen if isinstance(gen, PassageCache) else None  # type: ignore[return-value]


def reader(gen: Generator, *, cheap_only: bool = False) -> Reader | None:
    """`gen` as a model that can be asked whether the passages answer (`cheap_only`: only when
    that costs it a few tokens)."""
    if not isinstance(gen, Reader):
        return None
    return gen if gen.reads_cheaply or not cheap_only else None


def warm(gen: Generator, system: str) -> None:
    """Let `gen` read the fixed start of its prompts now, if it keeps what it reads."""
    if isinstance(gen, Warmable):
        gen.warm(system)


def close(gen: Generator) -> None:
    """Free what `gen` holds, if it holds anything."""
    if isinstance(gen, Closable):
        gen.close()


def waiting(gen: object) -> int | None:
    """How many requests wait for `gen` now, when a new one would wait too (a local model writing
    several answers at once keeps a queue); None when it would start at once."""
    count = getattr(gen, "waiting", None)
    return count() if callable(count) else None


def trusted_markers(gen: Generator) -> bool:
    """Whether `gen`'s markers are the passages' own (the assemble stage keeps them as they are)."""
    return bool(getattr(gen, "trusted_markers", False))
