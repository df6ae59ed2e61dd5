"""Select stage: rank the passages' sentences by how well they answer the question.

A stateless function computed once per answer. Its `key` sentences are the extractive backend's
answer and the highlights a model's prompt carries; its `ranked` list is what a windowed prompt
is built from.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from rag.embedding import Embedder, embed_cached, remember
from rag.text import is_heading, sentences, terms
from rag.types import Chunk, Highlight, Hit, Selection

MAX_SENTENCES = 3
MIN_SCORE = 0.35
SEMANTIC_SHORTLIST = 24
# A further sentence must score this share of the best one; more when it comes from another file,
# since an answer usually sits in one document and a second file's sentence is mostly context.
KEEP_SAME_SOURCE = 0.7
KEEP_OTHER_SOURCE = 0.8
# Words a question uses to point at a document ("the article on ...", "what does the author say")
# rather than at the answer: they say where to look, so they do not score answer sentences.
POINTER_WORDS = frozenset(
    terms("article articles post posts author authors document documents passage passages essay "
          "blog writer commenter piece")
)


def _candidates(passages: list[Hit]) -> list[Highlight]:
    out = []
    for marker, hit in enumerate(passages, start=1):
        text = hit.chunk.text
        for start, end in sentences(text):
            sentence = re.sub(r"\s+", " ", text[start:end])
            if len(sentence.split()) >= 4 and not is_heading(sentence):
                out.append(Highlight(marker=marker, sentence=sentence, start=start, end=end, score=0.0))
    return out


def _scores(question: str, candidates: list[Highlight], embedder: Embedder | None) -> tuple[np.ndarray, np.ndarray]:
    """(combined score, lexical score) of each candidate: term overlap with the question, rarer
    terms weighing more, plus embedding similarity on a lexical shortlist."""
    q_terms = set(terms(question))
    q_terms = (q_terms - POINTER_WORDS) or q_terms
    n = len(candidates)
    if not q_terms:
        return np.zeros(n), np.zeros(n)
    doc_freq: dict[str, int] = {}
    cand_terms = [set(terms(c.sentence)) for c in candidates]
    for ts in cand_terms:
        for t in ts & q_terms:
            doc_freq[t] = doc_freq.get(t, 0) + 1
    weight = {t: math.log(1 + n / (1 + doc_freq.get(t, 0))) for t in q_terms}
    total = sum(weight.values()) or 1.0
    lexical = np.array([sum(weight[t] for t in ts & q_terms) / total for ts in cand_terms])
    semantic = np.zeros(n)
    if embedder is not None:
        # Embedding is the costly part: only the lexically closest sentences are compared.
        shortlist = np.argsort(-lexical, kind="stable")[:SEMANTIC_SHORTLIST]
        vecs = embed_cached(embedder, [question] + [candidates[i].sentence for i in shortlist])
        semantic[shortlist] = vecs[1:] @ vecs[0]
    # Earlier passages ranked higher in retrieval; a small prior keeps ties in their order.
    prior = np.array([0.05 / c.marker for c in candidates])
    return 0.6 * lexical + 0.4 * np.clip(semantic, 0, None) + prior, lexical


def prime(chunks: list[Chunk], embedder: Embedder, saved: Path | None = None) -> int:
    """Embed every candidate sentence of these chunks now (a corpus small enough for the model
    to read whole, at start), so selecting later only looks their vectors up. With `saved`, the
    vectors are read from that file when it holds exactly these sentences, else computed and
    written there (once per build: a server's start then embeds nothing). Returns how many."""
    hits = [Hit(chunk=c, score=0.0, rank=i) for i, c in enumerate(chunks, start=1)]
    texts = [c.sentence for c in _candidates(hits)]
    if saved is not None and saved.is_file():
        try:
            with np.load(saved) as data:
                if data["texts"].tolist() == texts and remember(embedder, texts, data["vectors"]):
                    return len(texts)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or another build's: embedded again and rewritten below
    vectors = embed_cached(embedder, texts)
    if saved is not None and texts:
        try:
            saved.parent.mkdir(parents=True, exist_ok=True)
            tmp = saved.with_name(f".{saved.name}.tmp")
            with tmp.open("wb") as fh:
                np.savez(fh, texts=np.array(texts), vectors=vectors)
            tmp.replace(saved)
        except OSError:
            pass  # a read-only index folder: embedded again at the next start
    return len(texts)


def select(question: str, passages: list[Hit], embedder: Embedder | None = None) -> Selection:
    """Every candidate sentence of the numbered passages ranked best first, and the few that
    answer (none when nothing matches well enough)."""
    candidates = _candidates(passages)
    if not candidates:
        return Selection()
    scores, lexical = _scores(question, candidates, embedder)
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    ranked = [candidates[i].model_copy(update={"score": round(float(scores[i]), 6)}) for i in order]
    best = float(scores[order[0]])
    if best < MIN_SCORE or lexical[order[0]] == 0:
        return Selection(ranked=ranked)
    sources = [passages[c.marker - 1].chunk.source for c in candidates]
    picked: list[int] = []
    for i in order[: MAX_SENTENCES * 4]:
        if len(picked) >= MAX_SENTENCES or scores[i] < KEEP_SAME_SOURCE * best:
            break
        if sources[i] != sources[order[0]] and scores[i] < KEEP_OTHER_SOURCE * best:
            continue
        if any(candidates[i].sentence == candidates[j].sentence for j in picked):
            continue
        picked.append(i)
    key = [ranked[order.index(i)] for i in picked]
    return Selection(ranked=ranked, key=key)
