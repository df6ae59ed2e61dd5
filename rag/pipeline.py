"""The public entry points: ask(), ask_stream(), index status."""

from __future__ import annotations

from rag import store
from rag.config import Settings
from rag.errors import IndexNotFoundError
from rag.types import IndexStatus


def index_status(settings: Settings) -> IndexStatus:
    """What the manifest of the index in use says."""
    manifest = store.read_manifest(settings.index_dir)
    if manifest is None:
        raise IndexNotFoundError(f"no index in {settings.index_dir}; run `rag index` to build it")
    return IndexStatus(
        documents=len(manifest.documents),
        chunks=manifest.chunk_count,
        embedding_model=manifest.embedding_model,
        dimension=manifest.dimension,
        chunk_tokens=manifest.chunk_tokens,
        chunk_overlap=manifest.chunk_overlap,
        built_at=manifest.built_at,
        index_dir=str(settings.index_dir),
        sources=sorted(manifest.documents),
    )
