"""`rag chats`: the saved conversations of the chat page (list them, export one as Markdown)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.chats import ChatStore
from rag.cli_options import IndexDir, Json
from rag.cli_options import settings as _settings

chats_app = typer.Typer(no_args_is_help=True, help="Saved conversations of the chat page.")
out = Console()

User = Annotated[str, typer.Option("--user", "-u", help="Whose conversations: the login name with RAG_AUTH, "
                                                        "none for the shared list.")]


@chats_app.command("list")
def list_chats(user: User = "", index: IndexDir = None, json_out: Json = False) -> None:
    """The conversations, the most recently active first."""
    store = ChatStore.for_settings(_settings(index_dir=index))
    conversations = store.list(user)
    if json_out:
        import json

        out.print_json(json.dumps([c.model_dump(mode="json") for c in conversations]))
        return
    if not conversations:
        out.print(f"no saved conversations{f' for {user!r}' if user else ''} in {store.path}", highlight=False)
        return
    table = Table("id", "title", "updated")
    for c in conversations:
        table.add_row(c.id, escape(c.title), c.updated.astimezone().strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@chats_app.command("export")
def export_chat(
    conversation_id: Annotated[str, typer.Argument(metavar="ID", help="From `rag chats list`.")],
    user: User = "",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file, "
                                                   "not standard output.")] = None,
    index: IndexDir = None,
) -> None:
    """One conversation as Markdown, each answer followed by its sources (file, lines, quote)."""
    markdown = ChatStore.for_settings(_settings(index_dir=index)).export_markdown(conversation_id, user)
    if output is None:
        typer.echo(markdown, nl=False)
    else:
        output.write_text(markdown, encoding="utf-8")
        out.print(f"wrote {output}", highlight=False)
