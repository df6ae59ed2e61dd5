"""The library's public API: everything `rag.__all__` names resolves, and `import rag` stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import rag

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "faiss", "fastapi", "gradio", "pydantic_settings",
         "rag.pipeline", "rag.config", "rag.documents", "rag.generation", "rag.openai_api")


def test_every_public_name_resolves():
    missing = [name for name in rag.__all__ if getattr(rag, name, None) is None]
    assert not missing, missing


def test_an_unknown_name_is_an_attribute_error():
    assert not hasattr(rag, "no_such_name")


def test_public_names_are_the_librarys_own_objects():
    from rag import errors, generation, openai_api, pipeline, reporting

    assert rag.Rag is pipeline.Rag
    assert rag.resolve_generator is generation.resolve_name
    assert rag.generator_is_parallel is generation.parallel
    assert rag.mount_openai_api is openai_api.mount_openai_api
    assert rag.describe_report is reporting.describe_report
    assert issubclass(rag.QuestionError, rag.RagError) and rag.QuestionError is errors.QuestionError


def test_importing_the_package_loads_nothing_heavy():
    # `rag --help` imports the package: the pipeline, models and web stack load on first use.
    code = f"import sys, rag; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
