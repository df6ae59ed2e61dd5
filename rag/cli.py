"""The `rag` command: a thin layer that parses input, calls the library and prints the result."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from rag.bench_cli import bench_app
from rag.chats_cli import chats_app
from rag.cli_options import GeneratorName, IndexDir, Json, Mode, Seeds, TopK
from rag.cli_options import settings as _settings
from rag.errors import RagError
from rag.eval_cli import eval_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ask your documents, offline.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


@app.command()
def index(
    seeds: Seeds = None,
    index_dir: IndexDir = None,
    force: bool = typer.Option(False, "--force", help="Re-embed everything."),
    watch: bool = typer.Option(False, "--watch", help="Keep running and rebuild on changes."),
    as_json: Json = False,
    engine: str = typer.Option(
        "plain", "--engine", help='plain (in this process) or ray (on a Ray cluster; pip install -e ".[scale]").'
    ),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to use with --engine ray (default: a local one on this machine)."
    ),
) -> None:
    """Build or update the index from the documents folder (only changes are re-embedded)."""
    from rag.indexer import build_index, watch as watch_seeds

    if engine not in ("plain", "ray"):
        raise RagError(f"--engine: unknown engine {engine!r}; choose plain or ray")
    settings = _settings(seeds_dir=seeds, index_dir=index_dir)
    if engine == "ray":
        from rag.ingest_ray import build_index_ray

        if watch:
            raise RagError("--watch rebuilds with the plain engine only; drop --engine ray or --watch")
        report = build_index_ray(settings, address=address, force=force, warn=_warn)
    elif address:
        raise RagError("--address is the Ray cluster of --engine ray; add --engine ray or drop --address")
    else:
        report = build_index(settings, force=force, progress=not as_json, warn=_warn)
    _print_report(report, as_json)
    if watch:
        err.print(f"watching {settings.seeds_dir} for changes (Ctrl+C to stop)")
        try:
            watch_seeds(
                settings,
                lambda r: _print_report(r, as_json) if r.wrote else None,
                on_error=lambda e: err.print(f"[red]error:[/] {e}", highlight=False),
            )
        except KeyboardInterrupt:
            pass


def _print_report(report, as_json: bool) -> None:
    if as_json:
        keys = ("added", "changed", "removed", "unchanged", "chunks", "embedded_chunks", "seconds")
        data = report.model_dump()
        print(json.dumps({k: data[k] for k in keys} | {"skipped": data["skipped"]}), flush=True)
        return
    from rag.reporting import describe_report, report_changes

    if report.full_rebuild_reason:
        out.print(f"full rebuild: {report.full_rebuild_reason}")
    for label, path in report_changes(report):
        out.print(f"  {label:<9} {path}", highlight=False)
    out.print(describe_report(report), highlight=False)


@app.command()
def status(
    index_dir: IndexDir = None,
    as_json: Json = False,
) -> None:
    """Show what the index holds: documents, chunks, model, build time."""
    from rag.pipeline import index_status

    st = index_status(_settings(index_dir=index_dir))
    if as_json:
        print(st.model_dump_json())
        return
    out.print(
        f"index      {st.index_dir}\n"
        f"documents  {st.documents}"
        + (f" ({', '.join(f'{n} {kind}' for kind, n in st.kinds.items())})" if st.kinds else "")
        + "\n"
        f"chunks     {st.chunks}\n"
        f"model      {st.embedding_model} ({st.dimension} dims)\n"
        f"chunking   {st.chunk_tokens} tokens, {st.chunk_overlap} overlap\n"
        f"built at   {st.built_at.isoformat(timespec='seconds')}",
        highlight=False,
    )
    if st.index_kind:
        knobs = ", ".join(f"{k}={v}" for k, v in st.index_parameters.items())
        recall = f", recall@10 {st.index_recall:.3f}" if st.index_recall is not None else ""
        out.print(f"vectors    {st.index_kind}{f' ({knobs})' if knobs else ''}{recall}", highlight=False)


@app.command()
def add(
    files: list[str] = typer.Argument(..., metavar="FILE", help="Files to copy into the documents folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace documents of the same name."),
    seeds: str | None = typer.Option(None, "--seeds", help="Documents folder (RAG_SEEDS_DIR)."),
    index_dir: str | None = typer.Option(None, "--index", help="Index folder (RAG_INDEX_DIR)."),
) -> None:
    """Add files to the documents folder and index them; one line per file says what became of it."""
    from pathlib import Path as FilePath

    from rag.documents import add_documents
    from rag.errors import UploadError

    settings = _settings(seeds_dir=seeds, index_dir=index_dir)
    results = add_documents([FilePath(f) for f in files], settings, overwrite=overwrite, warn=_warn)
    for r in results:
        chunks = f"{r.chunks} chunk{'s' if r.chunks != 1 else ''}"
        line = f"indexed  {r.name} ({chunks})" if r.state == "indexed" else f"{r.state:<8} {r.reason}"
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    missed = sum(r.state != "indexed" for r in results)
    if missed:
        raise UploadError(f"{missed} of {len(results)} files were not added; see the lines above")


@app.command()
def remove(
    names: list[str] = typer.Argument(..., metavar="NAME", help="Document names as the index lists them."),
    seeds: str | None = typer.Option(None, "--seeds", help="Documents folder (RAG_SEEDS_DIR)."),
    index_dir: str | None = typer.Option(None, "--index", help="Index folder (RAG_INDEX_DIR)."),
) -> None:
    """Remove documents from the documents folder and the index."""
    from rag.documents import remove_documents

    for name in remove_documents(names, _settings(seeds_dir=seeds, index_dir=index_dir), warn=_warn):
        out.print(f"removed  {name}", markup=False, highlight=False, soft_wrap=True)


def quiet_libraries() -> None:
    """Keep third-party chatter (debug lines, weight-loading bars) out of the user's terminal."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("bm25s", "transformers", "sentence_transformers", "httpx", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Waiting:
    """A spinner on stderr saying what happens before the first word (only on a terminal)."""

    def __init__(self, text: str) -> None:
        self._status = err.status(f"[dim]{text}...[/]") if err.is_terminal else None

    def __enter__(self) -> "_Waiting":
        if self._status is not None:
            self._status.start()
        return self

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"[dim]{text}...[/]")

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer from the documents."),
    generator: GeneratorName = None,
    top_k: TopK = None,
    mode: Mode = None,
    as_json: bool = typer.Option(False, "--json", help="Print the Answer as JSON."),
) -> None:
    """Answer a question from the documents, citing files and lines."""
    from rag.pipeline import Rag

    rag = Rag(_settings())
    rag.ensure_index(warn=_warn)
    if as_json:
        print(rag.ask_stream(question, generator=generator, top_k=top_k, mode=mode).result()
              .model_dump_json(indent=2))
        return
    live = sys.stdout.isatty()  # a terminal sees the words as they come; a file gets the checked answer once
    streamed = []
    with _Waiting("searching the documents") as waiting:
        stream = rag.ask_stream(question, generator=generator, top_k=top_k, mode=mode)
        waiting.update(stream.status or "writing")
        for piece in stream:
            waiting.stop()
            streamed.append(piece)
            if live:
                print(piece, end="", flush=True)
    answer = stream.result()
    if not live:
        print(answer.text)
    elif answer.text.strip() != "".join(streamed).strip():
        # Markers re-pointed, a draft completed, or the fallback answered: what the sources say.
        print()
        err.print("[dim]checked against the sources:[/]", highlight=False)
        print(answer.text)
    else:
        print()
    if answer.fallback_reason:
        err.print(f"[yellow]note:[/] {answer.fallback_reason}", highlight=False)
    if answer.citations:
        out.print("\nSources:")
        for c in answer.citations:
            page = f" (page {c.page})" if c.page else ""
            out.print(f"  [{c.marker}] {c.source}:{c.start_line}-{c.end_line}{page}", highlight=False)
    err.print(
        f"[dim]{answer.generator}, {answer.mode}; retrieval {answer.timings.retrieve:.2f}s, "
        f"total {answer.timings.total:.2f}s[/]",
        highlight=False,
    )


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (RAG_HOST, default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (RAG_PORT, default 7860)."),
    seeds: Seeds = None,
    index_dir: IndexDir = None,
    no_watch: bool = typer.Option(False, "--no-watch", help="Do not re-index when documents change."),
) -> None:
    """Serve the browser chat."""
    from ui.serving import serve as serve_ui

    settings = _settings(host=host, port=port, seeds_dir=seeds, index_dir=index_dir,
                         watch=False if no_watch else None)
    serve_ui(settings)


@app.command()
def models() -> None:
    """Prepare the packaged local model (joined from its packages once, hash checked)."""
    from rag.models import DEFAULT_LLM, default_llm_path, small_llm_path

    path = default_llm_path(progress=True)
    if path is None:
        raise RagError(f"{DEFAULT_LLM.name} is not installed; run {DEFAULT_LLM.install_hint}")
    out.print(f"default local model: {path}", highlight=False)
    small = small_llm_path()
    if small:
        out.print(f"small test model:    {small}", highlight=False)


INTERRUPTED = 130  # Ctrl+C during `rag index`, `rag ask`, ... (the shell's 128 + SIGINT); `rag serve` stops with 0


def main() -> None:
    """Entry point: run the app, turning product errors into one readable line and exit code 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
    except RagError as exc:
        # Escaped: a message naming `.[scale]` or a file called `[draft].md` is text, not markup.
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except typer.Abort as exc:  # Ctrl+C reaches here as Abort, caused by the KeyboardInterrupt
        sys.exit(INTERRUPTED if isinstance(exc.__cause__, KeyboardInterrupt) else 1)
    except typer.TyperException as exc:  # usage errors: a wrong option, a bad value
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    if isinstance(code, int) and code:
        sys.exit(code)


app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(chats_app, name="chats")

if __name__ == "__main__":
    main()
