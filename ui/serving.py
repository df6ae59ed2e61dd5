"""Running the chat: launch options, the network safety check, live re-indexing and warm-up."""

from __future__ import annotations

import ipaddress
import logging
import threading

from fastapi import FastAPI

from rag import Rag, RagError, Settings, shutdown
from ui.gradio_private import event_queue
from ui.idle import make_queue_sleep_when_idle
from ui.layout import CSS, THEME, build_app
from ui.state import Activity

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(settings: Settings) -> str | None:
    """A warning when the chat would be reachable from other machines without a password."""
    if is_loopback(settings.host) or settings.auth is not None:
        return None
    return (
        f"serving on {settings.host}, which other machines can reach, without a password; "
        "set RAG_AUTH=user:password (or bind to 127.0.0.1)"
    )


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for `Blocks.launch` from the settings (address, auth, look)."""
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        # One login as a pair (as before); several as Gradio's list of pairs.
        "auth": settings.auth_pair() if len(settings.auth_users()) <= 1 else settings.auth_users(),
        "auth_message": "This chat is protected: sign in with the RAG_AUTH credentials.",
        "theme": THEME,
        "css": CSS,
        "footer_links": ["gradio", "settings"],
        "ssr_mode": False,
        "quiet": True,
        "share": False,
        "show_error": False,
        # Gradio stores an upload before any handler sees it: nothing over the per-upload total is
        # taken at all (the per-file limit is checked by rag.documents, which says which file).
        "max_file_size": int(settings.upload_max_total_mb * 1024 * 1024),
    }


def extra_routes(app: FastAPI, rag: Rag) -> None:
    """Where routes beside the chat are added: the OpenAI-compatible `/v1` API.

    Called once the server's FastAPI app exists and before `serve` reports the chat as running.
    """
    from rag import mount_openai_api  # the API module is loaded only when a server starts

    mount_openai_api(app, rag)


def _watch_forever(rag: Rag, activity: Activity, stop: threading.Event) -> None:
    try:
        rag.watch(activity.record_report, on_error=activity.record_error, stop_event=stop)
    except Exception:  # the thread must say why it died
        log.exception("live re-indexing stopped")


def _warm_up(rag: Rag, activity: Activity, stop: threading.Event) -> None:
    """Load the index, embedder and generator, and let a local model read the fixed start of its
    prompt, before the first question needs them; the page says so meanwhile."""
    selection = rag.settings.generator
    activity.warming = "Warming up the answering model: the first answer may take longer."
    try:
        activity.resolve(selection, rag.warm_up(selection).name)
    except RagError as exc:
        if not stop.is_set():  # stopped by Ctrl+C while loading: nothing to report
            log.warning("warm-up: %s", exc)
    except Exception:
        log.exception("warm-up failed")
    finally:
        activity.warming = None


def serve(settings: Settings) -> None:
    """Serve the chat on settings.host:settings.port until interrupted, re-indexing on changes."""
    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
        print(f"warning: {warning}", flush=True)
    rag = Rag(settings)
    activity = Activity(watching=settings.watch)
    stop = threading.Event()
    if settings.watch:
        threading.Thread(target=_watch_forever, args=(rag, activity, stop), name="rag-watch", daemon=True).start()
    demo = build_app(rag, activity=activity)
    try:
        # Ready before the address is printed: a first question asked the moment the page is up
        # would otherwise wait for the embedder, the model and its prompt start to load.
        print("Loading the index and the answering model...", flush=True)
        _warm_up(rag, activity, stop)
        _, local_url, _ = demo.launch(prevent_thread_lock=True, **launch_options(settings))
        extra_routes(demo.app, rag)
        make_queue_sleep_when_idle(event_queue(demo))
        print(f"Chat running on {local_url}  (Ctrl+C to stop)", flush=True)
        demo.block_thread()  # returns on Ctrl+C
    finally:
        stop.set()
        demo.close()
        rag.close()
        shutdown()  # the models are freed now, in order, not in the interpreter's teardown
