"""Plain text, Markdown and HTML."""

from __future__ import annotations

from rag.loaders.base import Parsed, decode_text, html_text


def load_text(data: bytes, name: str) -> Parsed:
    """A text or Markdown file as it is (decoded, newlines normalised)."""
    return Parsed(text=decode_text(data))


def load_html(data: bytes, name: str) -> Parsed:
    """An HTML page's visible text, one block a line."""
    return Parsed(text=html_text(decode_text(data)))
