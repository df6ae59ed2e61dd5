"""What the `rag` commands share: their common options and the settings they build from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rag.config import Settings

Seeds = Annotated[Optional[Path], typer.Option("--seeds", help="Documents folder (RAG_SEEDS_DIR).")]
IndexDir = Annotated[Optional[Path], typer.Option("--index", help="Index folder (RAG_INDEX_DIR).")]
GeneratorName = Annotated[
    Optional[str], typer.Option("--generator", "-g", help="auto, llamacpp, openai, extractive.")
]
TopK = Annotated[Optional[int], typer.Option("--top-k", "-k", help="Passages to retrieve (RAG_TOP_K).")]
Mode = Annotated[Optional[str], typer.Option("--mode", "-m", help="dense, bm25 or hybrid.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def settings(**overrides: object) -> Settings:
    """Settings from the environment and `.env`, with the options given on the command line."""
    import logging

    from rag.config import load_settings

    loaded = load_settings(**overrides)
    logging.getLogger().setLevel(loaded.log_level.upper())  # RAG_LOG_LEVEL
    return loaded
