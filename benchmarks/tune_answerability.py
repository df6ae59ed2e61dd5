"""Fit the answerability score (rag/answerability.py) and choose its threshold, on tune data only.

    rag bench tune-answerability            # prints the weights, the bias and the threshold
    rag bench tune-answerability --json     # the same as JSON
    rag bench tune-answerability --write    # and records them in rag/data/answerability.json

Tune data: SQuAD 2.0's tune half (its first 8 titles in file order) and all of ClapNQ, each
question through the product's own retrieval and select stage over its corpus, indexed the way
`rag eval qa --corpus` indexes it. SQuAD 2.0's report half (its last 8 titles) is never read here.
The product's own dev set (../shared/eval/seeds_qa_dev.jsonl over seeds/) is not fitted on; it
only bounds the threshold.

The model is a logistic regression on the features of `rag.answerability.features`, fitted by
gradient descent with each weight held to the sign its feature obviously has (more question words
found never lowers the score), so the score stays monotone in them. The threshold is the highest
one at which the extractive backend, with the decision applied, refuses at most 8 % of the
answerable questions of each tune set, and none of the dev set's answerable questions.

Each question's retrieved passages and ranked sentences are cached as JSON lines next to the
corpus's index under ~/.cache/rag/eval/<set>/ (keyed by index folder, top k and retrieval mode), so
refitting after a change to the features costs seconds; `bench_answerability.py` reads the same way.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"
SQUAD = SHARED / "squad2"
CLAPNQ = SHARED / "clapnq"
SEEDS_QA = ROOT.parent / "shared" / "eval" / "seeds_qa_dev.jsonl"


@dataclass(frozen=True)
class Case:
    """One question with what the retrieve and select stages made of it."""

    set: str
    id: str
    question: str
    answerable: bool
    answers: list
    hits: list  # list[rag.types.Hit]
    selection: object  # rag.types.Selection


def open_rag(folder: Path):
    """A Rag over the data set's corpus, indexed the way `rag eval qa --corpus` indexes it."""
    from rag.config import load_settings
    from rag.evaluation import qa
    from rag.pipeline import Rag

    settings = qa.corpus_settings(folder / "corpus.jsonl", load_settings(), seeds=None, index=None)
    rag = Rag(settings)
    rag.index()
    return rag


def open_seeds():
    """A Rag over the repository's seeds/, indexed in the evaluation cache (not in index/)."""
    from rag.config import load_settings
    from rag.evaluation.beir import index_folder
    from rag.evaluation.corpus import cache_root
    from rag.pipeline import Rag

    base = load_settings()
    index = index_folder(cache_root() / "eval" / "answerability-seeds", base)
    rag = Rag(base.model_copy(update={"seeds_dir": ROOT / "seeds", "index_dir": index}))
    rag.index()
    return rag


def cases(rag, name: str, items: list, *, cached: bool = True) -> list[Case]:
    """The retrieve + select output for each QAItem, read from the cache where it has it (a
    benchmark corpus never changes; the seeds folder may, so it is not cached)."""
    from rag.types import Hit, Selection

    s = rag.settings
    cache = Path(s.index_dir).parent / f"answerability-{Path(s.index_dir).name}-k{s.top_k}-{s.retrieval_mode}.jsonl"
    stored: dict[str, dict] = {}
    if cached and cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            stored[record["question"]] = record
    out = []
    for n, item in enumerate(items, start=1):
        question = rag.check_question(item.question)
        if question not in stored:
            stored[question] = _observe(rag, question, cache if cached else None)
        record = stored[question]
        if n % 200 == 0:
            print(f"{name}: {n}/{len(items)}", file=sys.stderr, flush=True)
        out.append(Case(set=name, id=item.id, question=question, answerable=not item.unanswerable,
                        answers=list(item.answers), hits=[Hit.model_validate(h) for h in record["hits"]],
                        selection=Selection.model_validate(record["selection"])))
    return out


def _observe(rag, question: str, cache: Path | None) -> dict:
    """Retrieve and select for one question, as the pipeline does; appended to the cache."""
    from rag.selection import select

    hits = rag.retrieve(question)
    selection = select(question, hits, rag.embedder)
    record = {"question": question, "hits": [h.model_dump(mode="json") for h in hits],
              "selection": selection.model_dump(mode="json")}
    if cache is not None:
        with cache.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")
    return record


def tune_cases() -> list[Case]:
    """SQuAD 2.0's tune half (its first 8 titles) and all of ClapNQ."""
    from rag.evaluation.questions import load_questions, title_half

    squad = title_half(load_questions(SQUAD / "qa.jsonl"), "tune")
    out = cases(open_rag(SQUAD), "squad2-tune", squad)
    out += cases(open_rag(CLAPNQ), "clapnq", load_questions(CLAPNQ / "qa.jsonl"))
    return out


def dev_cases() -> list[Case]:
    """The product's own dev questions over seeds/: they bound the threshold, nothing is fitted."""
    from rag.evaluation.questions import load_questions

    return cases(open_seeds(), "seeds-dev", load_questions(SEEDS_QA), cached=False)


# Each weight keeps the sign its feature obviously has: +1 (more of it, more answerable) unless
# listed. Left free, the lexical share comes out negative (beside the sentence score, which mixes
# word and meaning overlap, more word overlap means less meaning overlap), and the model then
# doubts the questions users ask in the documents' own words.
SIGNS = {"type_missing": -1, "negated": -1, "negation_mismatch": -1}
MAX_FALSE_REFUSALS = 0.08


def matrix(items: list[Case]):
    """Feature rows and answerable labels."""
    import numpy as np

    from rag.answerability import features

    rows = [features(c.question, c.hits, c.selection).vector() for c in items]
    return np.array(rows, dtype=float), np.array([c.answerable for c in items], dtype=float)


def fit(x, y, *, signs=None, standardise: bool = True, l2: float = 1e-3, steps: int = 20000,
        rate: float = 0.5):
    """Logistic regression by projected gradient descent, each weight clipped to its sign (the
    answerability features' SIGNS unless given; 0 leaves a weight free), on standardised features
    unless told not to; returned as (weights, bias) on the raw features."""
    import numpy as np

    from rag.answerability import FEATURE_NAMES

    if standardise:
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd == 0] = 1.0
    else:
        mu, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
    z = (x - mu) / sd
    if signs is None:
        signs = [SIGNS.get(name, 1) for name in FEATURE_NAMES]
    signs = np.asarray(signs, dtype=float)
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= rate * (z.T @ (p - y) / len(y) + l2 * w)
        b -= rate * float(np.mean(p - y))
        w = np.where(w * signs < 0, 0.0, w)
    weights = w / sd
    return weights, b - float(np.sum(weights * mu))


def refusals(items: list[Case], scores, threshold: float, floor: float):
    """Whether the extractive backend refuses each question with the decision at this threshold:
    the relevance floor, no key sentence, or a score under the threshold."""
    import numpy as np

    base = np.array([not c.hits or max(h.dense_score or 0.0 for h in c.hits) < floor or not c.selection.key
                     for c in items])
    return base | (scores < threshold)


def choose(items: list[Case], scores, floor: float, limit: float = MAX_FALSE_REFUSALS) -> float:
    """The highest threshold (on a 0.005 grid) keeping the extractive backend's false refusals
    within the limit on every tune set."""
    import numpy as np

    best = 0.0
    for t in np.arange(0.0, 1.0, 0.005):
        ok = True
        for name in sorted({c.set for c in items}):
            mask = np.array([c.set == name and c.answerable for c in items])
            if refusals([c for c, m in zip(items, mask) if m], scores[mask], t, floor).mean() > limit:
                ok = False
        if ok:
            best = float(round(t, 3))
    return best


def auc(scores, labels) -> float:
    """Area under the ROC curve: the chance an answerable question outscores an unanswerable one."""
    import numpy as np

    values, inverse = np.unique(scores, return_inverse=True)
    ends = np.cumsum(np.bincount(inverse, minlength=len(values)))
    ranks = (ends - (np.bincount(inverse, minlength=len(values)) - 1) / 2)[inverse]  # ties share their mean rank
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def figures(items: list[Case], scores, threshold: float, floor: float) -> list[dict]:
    """Per tune set: refusals on unanswerable and false refusals on answerable questions, without
    and with the decision, and the score's AUC."""
    import numpy as np

    out = []
    for name in sorted({c.set for c in items}):
        mask = np.array([c.set == name for c in items])
        group = [c for c, m in zip(items, mask) if m]
        labels = np.array([c.answerable for c in group])
        before = refusals(group, scores[mask], 0.0, floor)
        after = refusals(group, scores[mask], threshold, floor)
        out.append({"set": name, "answerable": int(labels.sum()), "unanswerable": int((~labels).sum()),
                    "auc": round(auc(scores[mask], labels.astype(float)), 3),
                    "refused_unanswerable_before": round(float(before[~labels].mean()), 3),
                    "false_refusals_before": round(float(before[labels].mean()), 3),
                    "refused_unanswerable": round(float(after[~labels].mean()), 3),
                    "false_refusals": round(float(after[labels].mean()), 3)})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    import numpy as np

    from rag.answerability import FEATURE_NAMES
    from rag.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true", help="record the fit in rag/data/answerability.json")
    args = parser.parse_args(argv)
    floor = load_settings().relevance_floor
    fitted = tune_cases()
    x, y = matrix(fitted)
    weights, bias = fit(x, y)
    items = fitted + dev_cases()
    x, _ = matrix(items)
    scores = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
    threshold = choose(items, scores, floor)
    table = figures(items, scores, threshold, floor)
    result = {"weights": dict(zip(FEATURE_NAMES, np.round(weights, 4).tolist())), "bias": round(bias, 4),
              "threshold": threshold, "tune": table}
    if args.write:
        from benchmarks.common import write_fit

        write_fit("features", {k: result[k] for k in ("weights", "bias", "threshold")}, argv=argv,
                  fitted_on="SQuAD 2.0 tune half (its first 8 titles) and ClapNQ, through the product's retrieval "
                            "and select stages; the seeds dev set only bounds the threshold")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("WEIGHTS = (" + ", ".join(f"{w:.4f}" for w in weights) + ")")
    print(f"BIAS = {bias:.4f}")
    print(f"TUNED_THRESHOLD = {threshold}")
    for name, w in zip(FEATURE_NAMES, weights):
        print(f"  {name:18s} {w:+.4f}")
    print("| Tune set | answerable | unanswerable | AUC | refused unanswerable (before -> after) "
          "| false refusals (before -> after) |")
    for r in table:
        print(f"| {r['set']} | {r['answerable']} | {r['unanswerable']} | {r['auc']:.3f} | "
              f"{r['refused_unanswerable_before']:.3f} -> {r['refused_unanswerable']:.3f} | "
              f"{r['false_refusals_before']:.3f} -> {r['false_refusals']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
