"""Generator backends behind one registry: `llamacpp`, `openai`, `extractive`, and `auto`."""

from __future__ import annotations

from collections.abc import Callable

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import ConfigError, GeneratorUnavailableError
from rag.generation.base import GenerationRequest, Generator, Message

Factory = Callable[[Settings, Embedder | None], Generator]
_REGISTRY: dict[str, Factory] = {}
_SERIAL: set[str] = set()
AUTO = "auto"


def register(name: str, factory: Factory, *, parallel: bool = True) -> None:
    """Make a backend available under a name (built-ins register exactly like plug-ins).

    `parallel=False` says the backend answers one question at a time (a model in this process):
    the page then queues questions and shows each its place instead of starting them together.
    """
    _REGISTRY[name] = factory
    if parallel:
        _SERIAL.discard(name)
    else:
        _SERIAL.add(name)


def parallel(name: str) -> bool:
    """Whether a registered backend can work on several answers at once."""
    return name not in _SERIAL


def registered(name: str) -> tuple[Factory, bool] | None:
    """The factory registered under `name` and whether it is parallel (to register it again)."""
    return (_REGISTRY[name], name not in _SERIAL) if name in _REGISTRY else None


def unregister(name: str) -> None:
    """Remove a backend registered under `name` (a plug-in unloading, or a test cleaning up)."""
    _REGISTRY.pop(name, None)
    _SERIAL.discard(name)


def names() -> list[str]:
    return [AUTO, *sorted(_REGISTRY)]


def resolve_name(name: str, settings: Settings) -> str:
    """The backend `auto` stands for: openai if configured, else a local model if installed."""
    if name != AUTO:
        if name not in _REGISTRY:
            raise ConfigError(
                f"RAG_GENERATOR: unknown generator {name!r}; choose one of {', '.join(names())}"
            )
        return name
    from rag.models import local_model_available

    if settings.openai_base_url:
        return "openai"
    if local_model_available(settings.llm_model_path) and _llama_importable():
        return "llamacpp"
    return "extractive"


def _llama_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def create(name: str, settings: Settings, embedder: Embedder | None = None) -> Generator:
    """A ready backend by name (resolving `auto`); unknown names list the valid ones."""
    resolved = resolve_name(name, settings)
    return _REGISTRY[resolved](settings, embedder)


def available(settings: Settings) -> list[str]:
    """Names a user can pick right now on this machine."""
    from rag.models import local_model_available

    out = [AUTO]
    if local_model_available(settings.llm_model_path) and _llama_importable():
        out.append("llamacpp")
    if settings.openai_base_url:
        out.append("openai")
    out.append("extractive")
    out += [n for n in sorted(_REGISTRY) if n not in out and n not in ("llamacpp", "openai")]
    return out


def _llamacpp(settings: Settings, embedder: Embedder | None) -> Generator:
    from rag.generation.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator.from_settings(settings)


def _openai(settings: Settings, embedder: Embedder | None) -> Generator:
    from rag.generation.openai_compat import OpenAIGenerator

    return OpenAIGenerator.from_settings(settings)


def _extractive(settings: Settings, embedder: Embedder | None) -> Generator:
    from rag.generation.extractive import ExtractiveGenerator

    return ExtractiveGenerator(embedder)


register("llamacpp", _llamacpp, parallel=False)
register("openai", _openai)
register("extractive", _extractive)

__all__ = [
    "Generator",
    "GenerationRequest",
    "Message",
    "GeneratorUnavailableError",
    "register",
    "unregister",
    "parallel",
    "names",
    "create",
    "available",
    "resolve_name",
]
