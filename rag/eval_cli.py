"""`rag eval`: answer quality on question sets and retrieval quality on BEIR folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from rag.cli_options import GeneratorName, IndexDir, Json, Mode, Seeds, TopK
from rag.cli_options import settings as _settings
from rag.errors import ConfigError

eval_app = typer.Typer(no_args_is_help=True, help="Measure answer and retrieval quality.")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _floors(spec: str) -> list[float]:
    try:
        return [float(x) for x in spec.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"--sweep-floor: expected numbers separated by commas, got {spec!r}") from None


class _Progress:
    """A progress line on stderr, so --json output on stdout stays clean."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            f"[dim]{label}[/]", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err, transient=True,
        )
        self._task = None

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("", total=total)
        self._progress.update(self._task, completed=done)


@eval_app.command("qa")
def qa(
    file: Path = typer.Argument(..., help="Question set (JSON lines: seeds or ClapNQ shape)."),
    generator: GeneratorName = None,
    top_k: TopK = None,
    mode: Mode = None,
    as_json: Json = False,
    seeds: Seeds = None,
    index_dir: IndexDir = None,
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="A corpus.jsonl whose documents are written as <id>.txt and indexed "
        "(in ~/.cache/rag/eval/ unless --seeds/--index say where)."
    ),
    answerable: Optional[int] = typer.Option(None, "--answerable", help="Use only the first N answerable questions."),
    unanswerable: Optional[int] = typer.Option(None, "--unanswerable", help="Use only the first N unanswerable questions."),
    titles: Optional[str] = typer.Option(
        None, "--titles", help="tune or report: only questions about the first or the last half of the "
        "titles, in file order (SQuAD 2.0: 8 articles each)."
    ),
    sample_size: Optional[int] = typer.Option(
        None, "--sample", help="A fixed random sample of N answerable and N unanswerable questions (see --seed)."
    ),
    seed: int = typer.Option(0, "--seed", help="The seed of --sample: the same seed gives the same questions."),
    sweep_floor: Optional[str] = typer.Option(
        None, "--sweep-floor", help="Comma-separated relevance floors: run once with the floor off, "
        "then report refusals at each value."
    ),
) -> None:
    """Ask a question set and score retrieval, citations, keywords, refusals and answers."""
    from rag.evaluation.qa import corpus_settings, evaluate_questions
    from rag.evaluation.questions import load_questions, select

    settings = _settings(seeds_dir=seeds, index_dir=index_dir)
    if corpus is not None:
        settings = corpus_settings(corpus, settings, seeds=seeds, index=index_dir)
    chosen = {"titles": titles, "sample": sample_size, "seed": seed if sample_size is not None else None,
              "answerable": answerable, "unanswerable": unanswerable}
    items = select(load_questions(file), answerable=answerable, unanswerable=unanswerable, titles=titles,
                   sample_size=sample_size, seed=seed)
    with _Progress("asking") as progress:
        report = evaluate_questions(
            file, settings, generator=generator, top_k=top_k, mode=mode, items=items,
            sweep=_floors(sweep_floor) if sweep_floor else None, progress=progress,
            selection={k: v for k, v in chosen.items() if v is not None},
        )
    data = report.to_dict()
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    _print_qa(data)


def _print_qa(data: dict) -> None:
    table = Table(title=f"{data['file']}: {data['generator']}, {data['mode']}, top {data['top_k']}",
                  caption="RR reciprocal rank; cite P/R citation precision/recall; kw keyword recall; "
                  "R-L ROUGE-L; ans gold answer contained; all cited/retr all gold documents cited/"
                  "retrieved; - not applicable")
    columns = ["id", "hit@1", "hit@3", "hit@5", "mrr", "citation_precision", "citation_recall",
               "keyword_recall", "rouge_l", "answer_contained", "all_gold_cited", "all_gold_retrieved",
               "refused", "latency_s"]
    headers = ["id", "h@1", "h@3", "h@5", "RR", "cite P", "cite R", "kw", "R-L", "ans", "all cited",
               "all retr", "refused", "s"]
    # The span and multi-document columns only where the set has them.
    for optional in ("answer_contained", "all_gold_cited", "all_gold_retrieved"):
        if all(q[optional] is None for q in data["questions"]):
            del headers[columns.index(optional)]
            columns.remove(optional)
    for header in headers:
        table.add_column(header, justify="left" if header == "id" else "right", no_wrap=True)
    for q in data["questions"]:
        refused = _fmt(q["refused"])
        if q["unanswerable"]:
            refused = f"[green]{refused}[/]" if q["refused"] else f"[red]{refused}[/]"
        elif q["refused"]:
            refused = f"[red]{refused}[/]"
        cells = [refused if c == "refused" else _fmt(q[c], 2) for c in columns]
        table.add_row(*cells)
    out.print(table)
    overall = Table(title="overall", show_header=False)
    overall.add_column("metric")
    overall.add_column("value", justify="right")
    for key, value in data["overall"].items():
        overall.add_row(key, _fmt(value))
    out.print(overall)
    if data.get("floor_sweep"):
        sweep = Table(title="relevance floor sweep (floor off during the run)")
        for header in ("floor", "refusal_accuracy", "false_refusal_rate", "keyword_recall",
                       "citation_recall", "rouge_l", "answer_contained"):
            sweep.add_column(header, justify="right")
        for row in data["floor_sweep"]:
            sweep.add_row(*[_fmt(v) for v in row.values()])
        out.print(sweep)


@eval_app.command("beir")
def beir(
    folder: Path = typer.Argument(..., help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv."),
    mode: str = typer.Option("dense", "--mode", "-m", help="dense, bm25 or hybrid."),
    split: str = typer.Option("test", "--split", help="Which qrels/SPLIT.tsv to score."),
    as_json: Json = False,
    limit_queries: Optional[int] = typer.Option(None, "--limit-queries", help="Score only the first N queries."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Where the corpus files and index go (default ~/.cache/rag, or RAG_EVAL_CACHE)."
    ),
) -> None:
    """Index a BEIR corpus with the product's chunking and score retrieval (nDCG@10, Recall@100, MRR@10)."""
    from rag.evaluation.beir import evaluate_beir

    with _Progress("querying") as progress:
        report = evaluate_beir(folder, mode=mode, split=split, limit_queries=limit_queries,
                               cache=cache, progress=progress)
    data = report.to_dict()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title=f"{data['dataset']} ({data['split']}) — {data['mode']}, {data['embedding_model']}, "
                        f"chunks {data['chunk_tokens']}/{data['chunk_overlap']} tokens")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in data["scores"].items():
        table.add_row(name, f"{value:.4f}")
    idx, qry = data["indexing"], data["querying"]
    table.add_row("documents / chunks", f"{data['documents']} / {data['chunks']}")
    table.add_row("indexing", "reused previous build" if idx["reused"] else
                  f"{idx['seconds']:.1f}s, {_fmt(idx['documents_per_s'])} docs/s, {_fmt(idx['chunks_per_s'])} chunks/s")
    table.add_row("queries", str(data["queries"]))
    table.add_row("query throughput", f"{_fmt(qry['queries_per_s'])} queries/s")
    table.add_row("query latency p50 / p95", f"{_fmt(qry['latency_p50_ms'])} / {_fmt(qry['latency_p95_ms'])} ms")
    out.print(table)
    err.print(f"[dim]corpus files: {data['seeds_dir']}\nindex: {data['index_dir']}[/]", highlight=False)
