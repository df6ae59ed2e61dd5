"""Pure metric functions: retrieval hits, citations, keywords, refusals, answer spans, ROUGE-L, BEIR.

Every function takes plain values and returns a float (or None when the metric is undefined for
the input, e.g. precision of an answer that cites nothing), so each is testable by hand.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence

# BEIR's headline metrics, spelled the way ranx names them.
BEIR_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def distinct(items: Iterable[str]) -> list[str]:
    """The items in first-seen order without repeats (passages -> ranked source files)."""
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def hit_at_k(ranked: Sequence[str], gold: Iterable[str], k: int) -> float:
    """1.0 when any gold item is among the first k ranked items, else 0.0."""
    wanted = set(gold)
    return 1.0 if any(item in wanted for item in ranked[:k]) else 0.0


def reciprocal_rank(ranked: Sequence[str], gold: Iterable[str]) -> float:
    """1 / rank of the first gold item (1-based), 0.0 when none is ranked."""
    wanted = set(gold)
    for rank, item in enumerate(ranked, start=1):
        if item in wanted:
            return 1.0 / rank
    return 0.0


def citation_precision(cited: Iterable[str], gold: Iterable[str]) -> float | None:
    """Share of the distinct cited files that are gold; None when nothing is cited."""
    files = set(cited)
    if not files:
        return None
    return len(files & set(gold)) / len(files)


def citation_recall(cited: Iterable[str], gold: Iterable[str]) -> float | None:
    """Share of the gold files that are cited; None when there are no gold files."""
    wanted = set(gold)
    if not wanted:
        return None
    return len(wanted & set(cited)) / len(wanted)


def covers_all(items: Iterable[str], gold: Iterable[str]) -> float | None:
    """1.0 when every gold item is among the items (all gold files cited or retrieved), else 0.0;
    None when there is no gold item."""
    wanted = set(gold)
    if not wanted:
        return None
    return 1.0 if wanted <= set(items) else 0.0


def keyword_recall(text: str, groups: Sequence[Sequence[str]]) -> float | None:
    """Share of keyword groups with any member in the text (case-insensitive); None if no groups."""
    if not groups:
        return None
    lowered = text.lower()
    found = sum(1 for group in groups if any(word.lower() in lowered for word in group))
    return found / len(groups)


def refusal_accuracy(refused_on_unanswerable: Iterable[bool]) -> float | None:
    """Share of unanswerable questions that were refused; None when there are none."""
    flags = list(refused_on_unanswerable)
    return sum(flags) / len(flags) if flags else None


def false_refusal_rate(refused_on_answerable: Iterable[bool]) -> float | None:
    """Share of answerable questions that were refused; None when there are none."""
    flags = list(refused_on_answerable)
    return sum(flags) / len(flags) if flags else None


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the defined values, None when there are none."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def percentile(values: Sequence[float], q: float, *, method: str = "linear") -> float | None:
    """The q-th percentile (0-100) by numpy (linear interpolation unless another `method`); None for no values."""
    if len(values) == 0:
        return None
    import numpy as np  # imported when used, as ranx is below: the other metrics are plain Python

    return float(np.percentile(np.asarray(values, dtype=float), q, method=method))


_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower-cased, punctuation and articles removed, whitespace squashed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def answer_contained(text: str, golds: Iterable[str]) -> float | None:
    """1.0 when a normalised gold answer occurs in the normalised text as whole words, else 0.0;
    None when no gold answer has any words.

    Whole words, so that the gold answer "no" is not found in "north" nor "10th" in "110th".
    """
    spans = [g for g in (normalize_answer(gold) for gold in golds) if g]
    if not spans:
        return None
    padded = f" {normalize_answer(text)} "
    return 1.0 if any(f" {span} " in padded for span in spans) else 0.0


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens, as the rouge-score package tokenizes (no stemming)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta 1) of a prediction against one reference."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    if not pred or not ref:
        return 0.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l_best(prediction: str, references: Iterable[str]) -> float | None:
    """The best ROUGE-L F over several gold answers (rouge-score's score_multi); None if none."""
    scores = [rouge_l(prediction, ref) for ref in references]
    return max(scores) if scores else None


def beir_scores(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = BEIR_METRICS,
) -> dict[str, float]:
    """Mean BEIR metrics over the queries of qrels, computed with ranx.

    Queries of qrels that the run misses score 0 (ranx requires both to hold the same queries).
    """
    from ranx import Qrels, Run, evaluate

    qrels_dict = {
        q: {d: int(r) for d, r in docs.items() if int(r) > 0} for q, docs in qrels.items()
    }
    qrels_dict = {q: docs for q, docs in qrels_dict.items() if docs}
    # ranx cannot hold an empty ranking; a query with nothing retrieved gets one unjudged filler.
    run_dict = {
        q: ({d: float(s) for d, s in run[q].items()} if run.get(q) else {"__none__": 0.0})
        for q in qrels_dict
    }
    scores = evaluate(Qrels(qrels_dict), Run(run_dict), list(metrics), make_comparable=True)
    if isinstance(scores, float):  # a single metric comes back as a bare float
        scores = {metrics[0]: scores}
    return {name: float(value) for name, value in scores.items()}
