"""What the chat remembers: the answered turns of a session and what happens behind the page."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rag import Citation, IndexReport, describe_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """One answered question of a session, kept server-side for follow-ups and citations."""

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    refused: bool = False
    msg: int = -1  # index of the assistant message in the chat
    generator: str = ""
    # The index's content hash of each cited document when answered: a document whose hash
    # differs now has changed since, and its cited lines are not highlighted as if they held.
    document_hashes: Mapping[str, str] = field(default_factory=dict, hash=False)


class Activity:
    """What happens behind the page (watch rebuilds, warm-up), shared by every session."""

    def __init__(self, *, watching: bool = False) -> None:
        self.watching = watching
        self._lock = threading.Lock()
        self.last_report: IndexReport | None = None
        self.last_report_at: datetime | None = None
        self.last_error: str | None = None
        self._resolved: dict[str, str] = {}
        # What the page says while the model loads and reads its fixed prompt (None when ready).
        self.warming: str | None = None

    def record_report(self, report: IndexReport) -> None:
        """Keep a build's report for the status panel (a no-op check keeps the last real one)."""
        with self._lock:
            if report.wrote or self.last_report is None:
                self.last_report, self.last_report_at = report, datetime.now()
            self.last_error = None
        if report.wrote:
            log.info("index rebuilt: %s", describe_report(report))

    def record_error(self, exc: BaseException) -> None:
        with self._lock:
            self.last_error = str(exc)
        log.warning("re-indexing failed: %s", exc)

    def resolve(self, selection: str, used: str) -> None:
        """Remember which backend answered for a selection (`auto` stands for one of them)."""
        with self._lock:
            self._resolved[selection] = used

    def resolved(self, selection: str) -> str | None:
        with self._lock:
            return self._resolved.get(selection)


def message_text(message: dict) -> str:
    """The text of a chat message, whether Gradio hands it back as a string or as parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
