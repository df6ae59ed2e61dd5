"""One error hierarchy; every message is written to be shown to a user as is."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(RagError):
    """A setting is missing or invalid; the message names the setting."""


class LoaderError(RagError):
    """A document could not be read."""


class UploadError(RagError):
    """Documents could not be added or removed (uploads off, a name or file refused)."""


class IndexStoreError(RagError):
    """The index is missing, incompatible or damaged."""


class IndexNotFoundError(IndexStoreError):
    """No index has been built yet."""


class IndexMismatchError(IndexStoreError):
    """The index was built with other settings than the current ones."""


class IndexCorruptError(IndexStoreError):
    """An index file fails its checksum or cannot be parsed."""


class IndexLockedError(IndexStoreError):
    """Another build holds the index lock."""


class DatabaseUnavailableError(IndexStoreError):
    """The database named by RAG_DATABASE_URL cannot be reached or refused the connection."""


class EmbeddingError(RagError):
    """The embedding model could not be loaded or run."""


class QuestionError(RagError):
    """The question is empty, too long or otherwise unusable."""


class GeneratorError(RagError):
    """A generator backend failed or is not available."""


class GeneratorUnavailableError(GeneratorError):
    """The backend cannot run here (missing model, missing package, no endpoint)."""


__all__ = [
    "RagError",
    "ConfigError",
    "LoaderError",
    "UploadError",
    "IndexStoreError",
    "IndexNotFoundError",
    "IndexMismatchError",
    "IndexCorruptError",
    "IndexLockedError",
    "DatabaseUnavailableError",
    "EmbeddingError",
    "QuestionError",
    "GeneratorError",
    "GeneratorUnavailableError",
]


class ChatStoreError(RagError):
    """The saved conversations file cannot be used (newer schema, unreadable, unwritable)."""


class ConversationNotFoundError(ChatStoreError):
    """No conversation with that id belongs to that owner."""
