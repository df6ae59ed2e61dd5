"""The browser chat over the `rag` library: `build_app(rag)` for the page, `serve(settings)` to run it.

    from rag.config import load_settings
    from ui import serve
    serve(load_settings())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["build_app", "serve"]

if TYPE_CHECKING:
    from ui.app import build_app, serve


def __getattr__(name: str) -> Any:
    # Gradio is a heavy import; load it only when the app is actually wanted.
    if name in __all__:
        from ui import app

        return getattr(app, name)
    raise AttributeError(name)
