"""Shared pieces of the UI tests: a real `rag serve` subprocess and Debian's Chromium via Playwright."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = REPO_ROOT / "seeds"
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

# Playwright never downloads a browser here: it drives the system Chromium.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 120.0
ANSWER_TIMEOUT_MS = 90_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    seeds_dir: Path
    index_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _wait_until_serving(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"`rag serve` exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"`rag serve` did not answer on {server.url} within {timeout:.0f}s:\n{server.log()}")


@contextmanager
def running_server(workdir: Path, **settings: str) -> Iterator[Server]:
    """`rag serve` on a free port over a private copy of the seeds, run from `workdir` (no .env)."""
    seeds, index = workdir / "seeds", workdir / "index"
    shutil.copytree(SEEDS_DIR, seeds)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_SEEDS_DIR=str(seeds),
        RAG_INDEX_DIR=str(index),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        **{f"RAG_{k.upper()}": v for k, v in settings.items()},
    )
    rag = Path(sys.executable).with_name("rag")
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(rag), "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}/", process, log_path, seeds, index)
    try:
        _wait_until_serving(server, SERVER_START_TIMEOUT)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def ask(page, question: str, timeout: float = ANSWER_TIMEOUT_MS):
    """Type a question, send it, and wait for its final message; returns that message's locator."""
    finals = page.locator("#chat .rag-final")
    before = finals.count()
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()
    page.wait_for_function(
        "n => document.querySelectorAll('#chat .rag-final').length > n", arg=before, timeout=timeout
    )
    # The final message and everything rendered with it (sources, details line) share one bubble.
    return finals.nth(before).locator("xpath=..")


def save_screenshot(page, name: str) -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    path = ARTIFACTS_DIR / name
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, user: str, password: str) -> None:
    """Fill in and send Gradio's login form (shown instead of the chat when RAG_AUTH is set)."""
    page.locator("input[type=text]").first.fill(user)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()


def http_get(url: str, *, timeout: float = 10) -> tuple[int, str]:
    """Status and body of a GET, without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
