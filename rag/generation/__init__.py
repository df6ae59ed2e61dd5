"""Generator backends behind one registry: `llamacpp`, `openai`, `extractive`, and `auto`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import ConfigError, GeneratorUnavailableError
from rag.generation.base import GenerationRequest, Generator, Message

Factory = Callable[[Settings, Embedder | None], Generator]
AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    """A registered backend and what the pipeline needs to know of it beside its abilities."""

    name: str
    factory: Factory
    parallel: bool = True  # answers several questions at once (else the page queues them)
    local: bool = False  # the model in this process: it reads for every backend with RAG_ANSWERABILITY_READER=local
    fallback: bool = False  # answers when the chosen backend fails before saying anything
    # Loads what the backend needs process-wide (a model's weights) ahead of the first question,
    # in a thread of its own while the index and embedder load.
    prepare: Callable[[Settings], None] | None = None


_REGISTRY: dict[str, Backend] = {}


def register(name: str, factory: Factory, *, parallel: bool = True, local: bool = False, fallback: bool = False,
             prepare: Callable[[Settings], None] | None = None) -> None:
    """Make a backend available under a name (built-ins register exactly like plug-ins).

    `parallel=False` says the backend answers one question at a time (a model in this process):
    the page then queues questions and shows each its place instead of starting them together.
    """
    _REGISTRY[name] = Backend(name, factory, parallel, local, fallback, prepare)


def backend(name: str) -> Backend:
    """The registered backend `name` (not `auto`: resolve it first)."""
    if name not in _REGISTRY:
        raise ConfigError(f"RAG_GENERATOR: unknown generator {name!r}; choose one of {', '.join(names())}")
    return _REGISTRY[name]


def local_backend() -> Backend | None:
    """The backend registered as the model in this process, if any."""
    return next((b for b in _REGISTRY.values() if b.local), None)


def fallback_backend() -> Backend:
    """The backend that answers when another fails (the extractive one)."""
    return next(b for b in _REGISTRY.values() if b.fallback)


def parallel(name: str) -> bool:
    """Whether a registered backend can work on several answers at once."""
    return name not in _REGISTRY or _REGISTRY[name].parallel


def registered(name: str) -> Backend | None:
    """The backend registered under `name` (to register it again), if any."""
    return _REGISTRY.get(name)


def unregister(name: str) -> None:
    """Remove a backend registered under `name` (a plug-in unloading, or a test cleaning up)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return [AUTO, *sorted(_REGISTRY)]


def resolve_name(name: str, settings: Settings) -> str:
    """The backend `auto` stands for: openai if configured, else a local model if installed."""
    if name != AUTO:
        return backend(name).name  # an unknown name lists the valid ones
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
    return _REGISTRY[resolved].factory(settings, embedder)


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


def _llamacpp_weights(settings: Settings) -> None:
    from rag.generation.llamacpp import load_weights

    load_weights(settings)


def _openai(settings: Settings, embedder: Embedder | None) -> Generator:
    from rag.generation.openai_compat import OpenAIGenerator

    return OpenAIGenerator.from_settings(settings)


def _extractive(settings: Settings, embedder: Embedder | None) -> Generator:
    from rag.generation.extractive import ExtractiveGenerator

    return ExtractiveGenerator(embedder)


register("llamacpp", _llamacpp, parallel=False, local=True, prepare=_llamacpp_weights)
register("openai", _openai)
register("extractive", _extractive, fallback=True)

__all__ = [
    "Generator",
    "GenerationRequest",
    "Message",
    "GeneratorUnavailableError",
    "Backend",
    "backend",
    "local_backend",
    "fallback_backend",
    "register",
    "unregister",
    "parallel",
    "names",
    "create",
    "available",
    "resolve_name",
]
