"""The question set: one JSON-lines file parsed into QAItems, and the questions chosen from it.

Two shapes are accepted and may be mixed (see rag/evaluation/qa.py). Questions are chosen by half
of the titles (SQuAD 2.0's tune/report split), by a seeded random sample, or as the first N.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rag.errors import ConfigError
from rag.evaluation import corpus
from rag.evaluation.metrics import distinct

# Gold answers are short spans when the median one has at most this many words (SQuAD 2.0 and
# HotpotQA: 2; ClapNQ's long-form answers: 42); only then is containing one a fair check.
SHORT_ANSWER_WORDS = 10
HALVES = ("tune", "report")


class QAItem(BaseModel):
    """One question with what a good answer looks like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    question: str
    sources: list[str] = Field(default_factory=list)
    keywords: list[list[str]] = Field(default_factory=list)
    answers: list[str] = Field(default_factory=list)
    unanswerable: bool = False
    title: str | None = None  # the article the question is about (SQuAD 2.0)


def _normalise_source(source: str) -> str:
    return source.replace("\\", "/").removeprefix("./")


def parse_item(record: dict, where: str) -> QAItem:
    """A QAItem from either accepted shape; `where` names the line in errors."""
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{where}: `question` must be non-empty text")
    unanswerable = bool(record.get("unanswerable", False)) or record.get("answerable", True) is False
    sources = [_normalise_source(str(s)) for s in record.get("sources") or []]
    if not unanswerable:
        # The passages named for an unanswerable ClapNQ question look related but do not answer it.
        sources += [corpus.file_name(str(d)) for d in record.get("gold_doc_ids") or []]
    groups: list[list[str]] = []
    for group in record.get("keywords") or []:
        words = [group] if isinstance(group, str) else list(group)
        if not words or not all(isinstance(w, str) for w in words):
            raise ConfigError(f"{where}: each keyword group must be text or a list of text")
        groups.append(words)
    answers = record.get("answers") or []
    if isinstance(answers, str):
        answers = [answers]
    return QAItem(
        id=str(record.get("id") or record.get("_id") or where.rsplit(":", 1)[-1]),
        question=question,
        sources=distinct(sources),
        keywords=groups,
        answers=[str(a) for a in answers if str(a).strip()],
        unanswerable=unanswerable,
        title=str(record["title"]) if record.get("title") not in (None, "") else None,
    )


def load_questions(path: Path) -> list[QAItem]:
    """The questions of a JSON-lines file, in file order."""
    items: list[QAItem] = []
    number = 0
    for number, record in enumerate(corpus.read_jsonl(path), start=1):
        items.append(parse_item(record, f"{path}:{number}"))
    if not items:
        raise ConfigError(f"{path}: no questions")
    return items


def title_half(items: list[QAItem], half: str) -> list[QAItem]:
    """The questions about the first half ("tune") or the last half ("report") of the titles,
    titles taken in file order (SQuAD 2.0's 16 articles: 8 and 8), so no article is in both."""
    if half not in HALVES:
        raise ConfigError(f"--titles: expected tune or report, got {half!r}")
    if any(item.title is None for item in items):
        raise ConfigError("--titles needs a `title` on every question, and some have none; "
                          "leave out --titles for this set")
    titles = distinct(item.title for item in items)
    if len(titles) < 2:
        raise ConfigError(f"--titles needs questions about two or more titles; this set has {len(titles)}")
    middle = len(titles) // 2
    chosen = set(titles[:middle] if half == "tune" else titles[middle:])
    return [item for item in items if item.title in chosen]


def sample(items: list[QAItem], n: int, seed: int) -> list[QAItem]:
    """A fixed random sample of N answerable and N unanswerable questions (all of a kind when it
    has fewer), in file order; the same items and seed always give the same questions."""
    if n < 0:
        raise ConfigError(f"--sample: expected a count of 0 or more, got {n}")
    rng = random.Random(seed)
    chosen: set[int] = set()
    for unanswerable in (False, True):
        positions = [i for i, item in enumerate(items) if item.unanswerable == unanswerable]
        chosen.update(rng.sample(positions, min(n, len(positions))))
    return [item for i, item in enumerate(items) if i in chosen]


def select(
    items: list[QAItem],
    *,
    answerable: int | None = None,
    unanswerable: int | None = None,
    titles: str | None = None,
    sample_size: int | None = None,
    seed: int = 0,
) -> list[QAItem]:
    """The questions to ask, narrowed in this order: one half of the titles, a seeded random
    sample of each kind, then the first N answerable and first M unanswerable questions."""
    if titles is not None:
        items = title_half(items, titles)
    if sample_size is not None:
        items = sample(items, sample_size, seed)
    out, seen = [], {True: 0, False: 0}
    limits = {False: answerable, True: unanswerable}
    for item in items:
        limit = limits[item.unanswerable]
        if limit is None or seen[item.unanswerable] < limit:
            out.append(item)
            seen[item.unanswerable] += 1
    return out


def short_answers(items: Iterable[QAItem]) -> bool:
    """Whether the gold answers are short spans: the median gold answer has at most
    SHORT_ANSWER_WORDS words (decided for a whole set, so every question is scored alike)."""
    lengths = [len(answer.split()) for item in items if not item.unanswerable for answer in item.answers]
    return bool(lengths) and statistics.median(lengths) <= SHORT_ANSWER_WORDS
