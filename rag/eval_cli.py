"""`rag eval`: answer quality on question sets and retrieval quality on BEIR folders."""

from __future__ import annotations

import typer

eval_app = typer.Typer(no_args_is_help=True, help="Measure answer and retrieval quality.")
