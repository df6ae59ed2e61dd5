"""The browser chat over the `rag` library: `build_app(rag)` for the page, `serve(settings)` to run it.

    from rag import load_settings
    from ui import serve
    serve(load_settings())

Modules: `state` (turns, background activity), `rendering` (the page's HTML, no Gradio),
`handlers` (the events), `layout` (the page, `style.css`), `serving` (running it), `documents`
and `documents_view` (the documents panel), `conversations` and `conversations_view` (the saved
conversations panel, over `rag.ChatStore`), `idle` (a quiet server sleeps).

The chat uses only public APIs: the library through `rag` (never its modules), and Gradio's
documented API except for the few parts in `gradio_private`, each there because Gradio has no
public way to do it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# An offline product: no telemetry or update checks from Gradio (must be set before its import).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__all__ = ["build_app", "serve"]

if TYPE_CHECKING:
    from ui.layout import build_app
    from ui.serving import serve


def __getattr__(name: str) -> Any:
    # Gradio is a heavy import; load it only when the app is actually wanted.
    if name == "build_app":
        from ui.layout import build_app

        return build_app
    if name == "serve":
        from ui.serving import serve

        return serve
    raise AttributeError(name)
