"""Saved conversations: one SQLite file beside the index (`<RAG_INDEX_DIR>/chats.sqlite3`).

Each conversation belongs to an owner (the login name with RAG_AUTH, "" otherwise) and every
call takes that owner: a conversation of another owner is "not found", whoever asks. Each write
is one transaction in WAL mode, so a killed process loses at most the turn being written. A turn
keeps the full `Answer` as JSON and the index's content hash of each cited document, so a
reopened conversation can tell which citations point into a document that has changed since.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field

from rag.config import Settings
from rag.errors import ChatStoreError, ConversationNotFoundError, RagError
from rag.text import lines_label
from rag.types import Answer, Frozen

FILE_NAME = "chats.sqlite3"
SCHEMA_VERSION = 1
TITLE_CHARS = 60  # a conversation's title: its first question, cut at a word to about this length
BUSY_TIMEOUT_MS = 5000  # another process (`rag chats`, a second server) may hold the write lock briefly

_SCHEMA = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL,
        created TEXT NOT NULL, updated TEXT NOT NULL)""",
    "CREATE INDEX conversations_by_owner ON conversations (owner, updated)",
    """CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        asked TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL)""",
    "CREATE INDEX turns_by_conversation ON turns (conversation, id)",
    """CREATE TABLE cited_documents (
        turn INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
        source TEXT NOT NULL, content_hash TEXT NOT NULL, PRIMARY KEY (turn, source))""",
)


class Conversation(Frozen):
    """A saved conversation's summary, as listed."""

    id: str
    owner: str
    title: str
    created: datetime
    updated: datetime


class Turn(Frozen):
    """One answered question of a conversation, with the hash of each cited document then."""

    question: str
    answer: Answer
    asked: datetime
    document_hashes: dict[str, str] = Field(default_factory=dict)  # source -> content hash

    def changed_sources(self, current: Mapping[str, str]) -> frozenset[str]:
        """The cited documents whose content differs now (or that left the index) from when asked."""
        return frozenset(s for s, h in self.document_hashes.items() if current.get(s) != h)


class Thread(Frozen):
    """A conversation with its turns, oldest first."""

    conversation: Conversation
    turns: list[Turn] = Field(default_factory=list)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def short_title(question: str, limit: int = TITLE_CHARS) -> str:
    """The first question as a title: one line, cut at a word boundary with an ellipsis."""
    text = " ".join(question.split())
    if len(text) <= limit:
        return text or "Untitled"
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,;:.") + "…"


def document_hashes(rag: object, sources: Iterable[str] | None = None) -> dict[str, str]:
    """source -> the index's content hash of each document `rag` answers from (only `sources`
    when given, e.g. those an answer cites); {} when there is no index."""
    try:
        documents = rag.retriever().manifest.documents  # type: ignore[attr-defined]
    except RagError:
        return {}
    wanted = documents.keys() if sources is None else set(sources) & documents.keys()
    return {path: documents[path].content_hash for path in wanted}


class ChatStore:
    """The conversations of one index folder; every method takes the owner it acts for."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ready = False

    @classmethod
    def for_settings(cls, settings: Settings) -> "ChatStore":
        """The store beside the index of `settings` (RAG_INDEX_DIR/chats.sqlite3)."""
        return cls(settings.index_dir / FILE_NAME)

    # -- the file ------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation (handlers run in many threads; connections are cheap)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ChatStoreError(f"cannot open the conversations file {self.path}: {exc}") from exc
        with closing(conn):
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                if not self._ready:
                    self._prepare(conn)
                yield conn
            except sqlite3.Error as exc:
                raise ChatStoreError(f"the conversations file {self.path} failed: {exc}") from exc

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the schema version (refusing a newer one) and create the tables of a new file."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ChatStoreError(
                f"the conversations file {self.path} was written by a newer version of rag (schema "
                f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade rag, or move the file away"
            )
        # WAL: readers never wait for a writer, and a commit is one append to the log. NORMAL
        # sync keeps every commit across a killed process (a power cut may lose the last one).
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if version == 0:
            with self._transaction(conn):
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # not created meanwhile
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._ready = True

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        """All or nothing: BEGIN IMMEDIATE takes the write lock first, so no write is half done."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _conversation(row: tuple) -> Conversation:
        id_, owner, title, created, updated = row
        return Conversation(id=id_, owner=owner, title=title, created=datetime.fromisoformat(created),
                            updated=datetime.fromisoformat(updated))

    def _find(self, conn: sqlite3.Connection, conversation_id: str, owner: str) -> Conversation:
        row = conn.execute(
            "SELECT id, owner, title, created, updated FROM conversations WHERE id = ? AND owner = ?",
            (str(conversation_id), owner),
        ).fetchone()
        if row is None:
            raise ConversationNotFoundError(f"no conversation {conversation_id!r}; `rag chats list` shows them")
        return self._conversation(row)

    def list(self, owner: str) -> list[Conversation]:
        """The owner's conversations, the most recently active first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT id, owner, title, created, updated FROM conversations WHERE owner = ? "
                "ORDER BY updated DESC, rowid DESC",
                (owner,),
            ).fetchall()
        return [self._conversation(row) for row in rows]

    def get(self, conversation_id: str, owner: str) -> Thread:
        """A conversation with its turns; ConversationNotFoundError unless the owner's."""
        with self._connect() as conn:
            conn.execute("BEGIN")  # one snapshot: the conversation and its turns agree
            try:
                conversation = self._find(conn, conversation_id, owner)
                turns = conn.execute(
                    "SELECT id, asked, question, answer FROM turns WHERE conversation = ? ORDER BY id",
                    (conversation.id,),
                ).fetchall()
                cited = conn.execute(
                    "SELECT c.turn, c.source, c.content_hash FROM cited_documents c "
                    "JOIN turns t ON t.id = c.turn WHERE t.conversation = ?",
                    (conversation.id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        hashes: dict[int, dict[str, str]] = {}
        for turn, source, content_hash in cited:
            hashes.setdefault(turn, {})[source] = content_hash
        return Thread(conversation=conversation, turns=[
            Turn(question=question, answer=Answer.model_validate_json(answer),
                 asked=datetime.fromisoformat(asked), document_hashes=hashes.get(turn_id, {}))
            for turn_id, asked, question, answer in turns
        ])

    # -- writing -------------------------------------------------------------------------------
    def create(self, owner: str, title: str = "") -> Conversation:
        """A new, empty conversation (titled by its first question when `title` is empty)."""
        with self._connect() as conn, self._transaction(conn):
            return self._insert(conn, owner, title)

    def _insert(self, conn: sqlite3.Connection, owner: str, title: str) -> Conversation:
        now = _now()
        conversation = Conversation(id=secrets.token_hex(12), owner=owner, title=title.strip(),
                                    created=now, updated=now)
        conn.execute(
            "INSERT INTO conversations (id, owner, title, created, updated) VALUES (?, ?, ?, ?, ?)",
            (conversation.id, owner, conversation.title, now.isoformat(), now.isoformat()),
        )
        return conversation

    def append(self, owner: str, conversation_id: str | None, answer: Answer,
               document_hashes: Mapping[str, str] | None = None) -> Conversation:
        """Save an answered question at the end of a conversation (a new one when the id is None),
        with the hashes of the documents it cites; all of it or nothing is written."""
        hashes = dict(document_hashes or {})
        with self._connect() as conn, self._transaction(conn):
            if conversation_id is None:
                conversation = self._insert(conn, owner, "")
            else:
                conversation = self._find(conn, conversation_id, owner)
            now = _now()
            cursor = conn.execute(
                "INSERT INTO turns (conversation, asked, question, answer) VALUES (?, ?, ?, ?)",
                (conversation.id, now.isoformat(), answer.question, answer.model_dump_json()),
            )
            for source, content_hash in hashes.items():
                conn.execute("INSERT INTO cited_documents (turn, source, content_hash) VALUES (?, ?, ?)",
                             (cursor.lastrowid, source, content_hash))
            title = conversation.title or short_title(answer.question)
            conn.execute("UPDATE conversations SET updated = ?, title = ? WHERE id = ?",
                         (now.isoformat(), title, conversation.id))
        return conversation.model_copy(update={"updated": now, "title": title})

    def rename(self, conversation_id: str, owner: str, title: str) -> Conversation:
        """Give a conversation a new title (blank: back to its first question)."""
        with self._connect() as conn, self._transaction(conn):
            conversation = self._find(conn, conversation_id, owner)
            title = " ".join(title.split())
            if not title:
                first = conn.execute("SELECT question FROM turns WHERE conversation = ? ORDER BY id LIMIT 1",
                                     (conversation.id,)).fetchone()
                title = short_title(first[0]) if first else ""
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation.id))
        return conversation.model_copy(update={"title": title})

    def delete(self, conversation_id: str, owner: str) -> None:
        """Delete a conversation and its turns; ConversationNotFoundError unless the owner's."""
        with self._connect() as conn, self._transaction(conn):
            conversation = self._find(conn, conversation_id, owner)
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation.id,))

    def export_markdown(self, conversation_id: str, owner: str) -> str:
        """The conversation as Markdown, each answer followed by its sources (file, lines, quote)."""
        return to_markdown(self.get(conversation_id, owner))


def to_markdown(thread: Thread) -> str:
    """A conversation as Markdown: the questions, the answers, and each answer's sources."""
    conversation = thread.conversation
    out = [f"# {conversation.title or 'Untitled'}", "",
           f"_Started {conversation.created:%Y-%m-%d %H:%M} UTC; {len(thread.turns)} questions._", ""]
    for number, turn in enumerate(thread.turns, start=1):
        answer = turn.answer
        out += [f"## {number}. {' '.join(turn.question.split())}", ""]
        out += ["_Not in the documents:_ " + answer.text if answer.refused else answer.text, ""]
        if answer.citations:
            out += ["**Sources**", ""]
            for c in answer.citations:
                quote = " ".join(c.quote.split())
                where = lines_label(c.start_line, c.end_line, c.page, sep=", ")
                out.append(f"- [{c.marker}] `{c.source}`, {where}: “{quote}”")
            out.append("")
    return "\n".join(out).rstrip() + "\n"
