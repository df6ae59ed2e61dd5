"""Answer quality on a question set: retrieval hits, citations, keywords, refusals, answers.

A question file is JSON lines (read and narrowed in rag/evaluation/questions.py). Two shapes are
accepted and may be mixed:

* the seeds shape: ``question``, gold ``sources`` (file names relative to the seeds folder),
  ``keywords`` (a list of any-of groups) and ``unanswerable``;
* the ClapNQ shape (also SQuAD 2.0 and HotpotQA): ``question``, ``answerable``, ``answers`` (gold
  answers, scored with ROUGE-L) and ``gold_doc_ids`` (documents of a corpus.jsonl, indexed as
  ``<id>.txt``), with an optional ``title`` (the article a question is about).

Metrics that need gold sources, keywords or answers are averaged over the answerable questions
that have them; a metric with nothing to average is None. Where the gold answers are short
spans (SQuAD, HotpotQA; not ClapNQ's long answers), an answer counts as right when it contains
one (`answer_contained`). Where a question needs two or more gold documents (HotpotQA), it
counts whether all of them were cited and all of them retrieved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rag.citations import MARKER
from rag.config import Settings
from rag.errors import RagError
from rag.evaluation import corpus
from rag.evaluation.metrics import (
    answer_contained,
    citation_precision,
    citation_recall,
    covers_all,
    distinct,
    false_refusal_rate,
    hit_at_k,
    keyword_recall,
    mean,
    percentile,
    reciprocal_rank,
    refusal_accuracy,
    rouge_l_best,
)
# parse_item and select are imported from here by scripts too.
from rag.evaluation.questions import QAItem, load_questions, parse_item, select, short_answers  # noqa: F401
from rag.prompting import REFUSAL

HIT_KS = (1, 3, 5)
# The names of the overall metrics, fixed: scripts and docs read them.
OVERALL_METRICS = (
    "hit@1",
    "hit@3",
    "hit@5",
    "mrr",
    "citation_precision",
    "citation_recall",
    "keyword_recall",
    "refusal_accuracy",
    "false_refusal_rate",
    "answer_contained",
    "all_gold_cited",
    "all_gold_retrieved",
)


@dataclass(frozen=True)
class Observation:
    """What the pipeline did for one question, before scoring."""

    item: QAItem
    text: str
    retrieved: list[str]  # distinct source files, in passage order
    cited: list[str]  # distinct cited source files
    refused: bool
    max_dense: float | None  # the score the relevance floor is compared with
    latency: float
    generator: str
    error: str | None = None


def observe(rag, item: QAItem, *, generator: str | None, top_k: int | None, mode: str | None) -> Observation:
    """Ask one question through the product and record what came back."""
    started = time.perf_counter()
    try:
        answer = rag.ask(item.question, generator=generator, top_k=top_k, mode=mode)
    except RagError as exc:
        return Observation(item, "", [], [], False, None, time.perf_counter() - started, generator or "", str(exc))
    latency = time.perf_counter() - started
    dense = [h.dense_score for h in answer.passages if h.dense_score is not None]
    return Observation(
        item=item,
        text=answer.text,
        retrieved=distinct(h.chunk.source for h in answer.passages),
        cited=distinct(c.source for c in answer.citations),
        refused=answer.refused,
        max_dense=max(dense) if dense else None,
        latency=latency,
        generator=answer.generator,
    )


def with_floor(obs: Observation, floor: float) -> Observation:
    """The observation as it would be with this relevance floor (exact: the floor only gates).

    Valid for observations made with the floor disabled (RAG_RELEVANCE_FLOOR=-1).
    """
    if obs.error is None and not obs.refused and (obs.max_dense is None or obs.max_dense < floor):
        return replace(obs, text=REFUSAL, cited=[], refused=True)
    return obs


@dataclass
class QuestionScore:
    id: str
    question: str
    unanswerable: bool
    refused: bool
    hits: dict[str, float | None]
    mrr: float | None
    citation_precision: float | None
    citation_recall: float | None
    keyword_recall: float | None
    rouge_l: float | None
    answer_contained: float | None
    all_gold_cited: float | None
    all_gold_retrieved: float | None
    latency_s: float
    max_dense: float | None
    retrieved: list[str]
    cited: list[str]
    gold: list[str]
    answer: str
    generator: str
    error: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        hits = data.pop("hits")
        out = {k: data[k] for k in ("id", "question", "unanswerable", "refused")}
        out.update(hits)
        out.update({k: v for k, v in data.items() if k not in out})
        return out


def strip_markers(text: str) -> str:
    """The answer without its `[n]` citation markers (they are not words of the answer)."""
    return MARKER.sub("", text)


def score(obs: Observation, *, spans: bool | None = None) -> QuestionScore:
    """Per-question metrics; retrieval and citation metrics only for answerable questions.

    `spans` says whether the set's gold answers are short spans (see `short_answers`); by
    default this question's own answers decide.
    """
    item = obs.item
    gold = item.sources if not item.unanswerable else []
    answerable = not item.unanswerable
    has_gold = answerable and bool(gold)
    multi_gold = answerable and len(gold) >= 2
    hits = {f"hit@{k}": hit_at_k(obs.retrieved, gold, k) if has_gold else None for k in HIT_KS}
    rouge = contained = None
    if answerable and item.answers:
        answer = strip_markers(obs.text)
        rouge = 0.0 if obs.refused else rouge_l_best(answer, item.answers)
        if spans if spans is not None else short_answers([item]):
            contained = 0.0 if obs.refused else answer_contained(answer, item.answers)
    return QuestionScore(
        id=item.id,
        question=item.question,
        unanswerable=item.unanswerable,
        refused=obs.refused,
        hits=hits,
        mrr=reciprocal_rank(obs.retrieved, gold) if has_gold else None,
        citation_precision=citation_precision(obs.cited, gold) if has_gold else None,
        citation_recall=citation_recall(obs.cited, gold) if has_gold else None,
        keyword_recall=keyword_recall(obs.text, item.keywords) if answerable else None,
        rouge_l=rouge,
        answer_contained=contained,
        all_gold_cited=covers_all(obs.cited, gold) if multi_gold else None,
        all_gold_retrieved=covers_all(obs.retrieved, gold) if multi_gold else None,
        latency_s=round(obs.latency, 4),
        max_dense=None if obs.max_dense is None else round(obs.max_dense, 4),
        retrieved=obs.retrieved,
        cited=obs.cited,
        gold=gold,
        answer=obs.text,
        generator=obs.generator,
        error=obs.error,
    )


def summarize(scores: Sequence[QuestionScore]) -> dict:
    """Overall metrics: the fixed OVERALL_METRICS names plus ROUGE-L, latency and counts."""
    answerable = [s for s in scores if not s.unanswerable]
    unanswerable = [s for s in scores if s.unanswerable]
    latencies = [s.latency_s for s in scores]
    overall: dict[str, float | int | None] = {
        f"hit@{k}": mean(s.hits[f"hit@{k}"] for s in answerable) for k in HIT_KS
    }
    overall["mrr"] = mean(s.mrr for s in answerable)
    overall["citation_precision"] = mean(s.citation_precision for s in answerable)
    overall["citation_recall"] = mean(s.citation_recall for s in answerable)
    overall["keyword_recall"] = mean(s.keyword_recall for s in answerable)
    overall["refusal_accuracy"] = refusal_accuracy(s.refused for s in unanswerable)
    overall["false_refusal_rate"] = false_refusal_rate(s.refused for s in answerable)
    overall["rouge_l"] = mean(s.rouge_l for s in answerable)
    overall["answer_contained"] = mean(s.answer_contained for s in answerable)
    overall["all_gold_cited"] = mean(s.all_gold_cited for s in answerable)
    overall["all_gold_retrieved"] = mean(s.all_gold_retrieved for s in answerable)
    overall["latency_mean_s"] = mean(latencies)
    overall["latency_p50_s"] = percentile(latencies, 50)
    overall["latency_p95_s"] = percentile(latencies, 95)
    overall["questions"] = len(scores)
    overall["answerable"] = len(answerable)
    overall["unanswerable"] = len(unanswerable)
    overall["errors"] = sum(1 for s in scores if s.error)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in overall.items()}


def floor_sweep(observations: Sequence[Observation], floors: Iterable[float]) -> list[dict]:
    """Refusal accuracy / false refusals (and answer metrics) at each relevance floor."""
    rows = []
    spans = short_answers(o.item for o in observations)
    for floor in floors:
        overall = summarize([score(with_floor(o, floor), spans=spans) for o in observations])
        rows.append(
            {
                "floor": floor,
                "refusal_accuracy": overall["refusal_accuracy"],
                "false_refusal_rate": overall["false_refusal_rate"],
                "keyword_recall": overall["keyword_recall"],
                "citation_recall": overall["citation_recall"],
                "rouge_l": overall["rouge_l"],
                "answer_contained": overall["answer_contained"],
            }
        )
    return rows


@dataclass
class QAReport:
    file: str
    generator: str
    mode: str
    top_k: int
    relevance_floor: float
    embedding_model: str
    seeds_dir: str
    index_dir: str
    observations: list[Observation] = field(repr=False)
    sweep: list[dict] | None = None
    selection: dict | None = None  # how the questions were chosen (titles, sample, seed, first N)

    def scores(self) -> list[QuestionScore]:
        spans = short_answers(o.item for o in self.observations)
        return [score(o, spans=spans) for o in self.observations]

    def to_dict(self) -> dict:
        scores = self.scores()
        out = {
            "file": self.file,
            "generator": self.generator,
            "mode": self.mode,
            "top_k": self.top_k,
            "relevance_floor": self.relevance_floor,
            "embedding_model": self.embedding_model,
            "seeds_dir": self.seeds_dir,
            "index_dir": self.index_dir,
            "selection": self.selection or {},
            "overall": summarize(scores),
            "questions": [s.to_dict() for s in scores],
        }
        if self.sweep is not None:
            out["floor_sweep"] = self.sweep
        return out


def corpus_settings(corpus_jsonl: Path, base: Settings, *, seeds: Path | None, index: Path | None,
                    cache: Path | None = None) -> Settings:
    """Settings whose seeds folder holds corpus.jsonl as `<id>.txt` files (written here)."""
    from rag.evaluation.beir import index_folder

    root = (cache or corpus.cache_root()) / "eval" / Path(corpus_jsonl).resolve().parent.name
    seeds_dir = seeds or root / "seeds"
    corpus.write_corpus(Path(corpus_jsonl), seeds_dir, prune=seeds is None)
    index_dir = index or index_folder(root, base)
    return base.model_copy(update={"seeds_dir": seeds_dir, "index_dir": index_dir})


def ready(rag, generator: str | None) -> None:
    """Warm the generator as a server does at start, and wait for a corpus state it starts
    (a small corpus read whole): answers are measured as a user gets them once it is ready."""
    import time

    rag.warm_up(generator)
    if rag.corpus_cache.building():
        while rag.corpus_cache.building():
            time.sleep(1)
        rag.warm_up(generator)


def evaluate_questions(
    path: Path,
    settings: Settings,
    *,
    generator: str | None = None,
    top_k: int | None = None,
    mode: str | None = None,
    items: list[QAItem] | None = None,
    sweep: Sequence[float] | None = None,
    embedder=None,
    progress: Callable[[int, int], None] | None = None,
    selection: dict | None = None,
) -> QAReport:
    """Index the seeds folder (incrementally), ask every question, and collect the report.

    With `sweep`, the relevance floor is disabled for the run and applied afterwards at each
    value (exact, since the floor only decides whether the generator is called).
    """
    from rag.pipeline import Rag

    items = items if items is not None else load_questions(path)
    if sweep is not None:
        settings = settings.model_copy(update={"relevance_floor": -1.0})
    rag = Rag(settings, embedder=embedder)
    rag.index()
    gen = rag.generator(generator)  # load the model before the clock starts
    rag.retrieve("warm up", top_k=top_k, mode=mode)
    ready(rag, generator)
    observations = []
    for n, item in enumerate(items, start=1):
        observations.append(observe(rag, item, generator=generator, top_k=top_k, mode=mode))
        if progress is not None:
            progress(n, len(items))
    return QAReport(
        file=str(path),
        generator=gen.name,
        mode=mode or settings.retrieval_mode,
        top_k=top_k or settings.top_k,
        relevance_floor=settings.relevance_floor,
        embedding_model=rag.embedder.model_id,
        seeds_dir=str(settings.seeds_dir),
        index_dir=str(settings.index_dir),
        observations=observations,
        sweep=floor_sweep(observations, sweep) if sweep is not None else None,
        selection=selection,
    )
