"""No model: the answer is the passages' own sentences that best match the question, each cited."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import numpy as np

from rag.embedding import Embedder
from rag.generation.base import GenerationRequest
from rag.prompting import REFUSAL
from rag.text import sentences, terms
from rag.types import Hit

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
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*$")


def is_heading(sentence: str) -> bool:
    """A short line without closing punctuation: a title or heading, which names a topic but
    answers nothing."""
    return len(sentence.split()) < 12 and not _SENTENCE_END.search(sentence)


class ExtractiveGenerator:
    """Scores every sentence of the passages by term overlap with the question (rarer terms weigh
    more) plus embedding similarity, and returns the best few with their markers. Instant."""

    name = "extractive"
    context_tokens = 1_000_000

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder

    def key_sentences(self, question: str, passages: list[Hit]) -> list[tuple[int, str]]:
        """The (passage number, sentence) pairs that best answer the question, best first; none
        when nothing matches well enough. The answer of this backend, and the highlights a model's
        prompt carries."""
        candidates: list[tuple[int, str]] = []  # (marker, sentence)
        for marker, hit in enumerate(passages, start=1):
            text = hit.chunk.text
            for start, end in sentences(text):
                sentence = re.sub(r"\s+", " ", text[start:end])
                if len(sentence.split()) >= 4 and not is_heading(sentence):
                    candidates.append((marker, sentence))
        q_terms = set(terms(question))
        q_terms = (q_terms - POINTER_WORDS) or q_terms
        if not candidates or not q_terms:
            return []
        doc_freq: dict[str, int] = {}
        cand_terms = [set(terms(s)) for _, s in candidates]
        for ts in cand_terms:
            for t in ts & q_terms:
                doc_freq[t] = doc_freq.get(t, 0) + 1
        n = len(candidates)
        weight = {t: math.log(1 + n / (1 + doc_freq.get(t, 0))) for t in q_terms}
        total = sum(weight.values()) or 1.0
        lexical = np.array([sum(weight[t] for t in ts & q_terms) / total for ts in cand_terms])
        semantic = np.zeros(n)
        if self.embedder is not None:
            # Embedding is the costly part: only the lexically closest sentences are compared.
            shortlist = np.argsort(-lexical, kind="stable")[:SEMANTIC_SHORTLIST]
            vecs = self.embedder.embed([question] + [candidates[i][1] for i in shortlist])
            semantic[shortlist] = vecs[1:] @ vecs[0]
        # Earlier passages ranked higher in retrieval; a small prior keeps ties in their order.
        prior = np.array([0.05 / marker for marker, _ in candidates])
        scores = 0.6 * lexical + 0.4 * np.clip(semantic, 0, None) + prior
        order = np.argsort(-scores, kind="stable")
        best = float(scores[order[0]])
        if best < MIN_SCORE or lexical[order[0]] == 0:
            return []
        sources = [passages[marker - 1].chunk.source for marker, _ in candidates]
        picked: list[int] = []
        for i in order[: MAX_SENTENCES * 4]:
            if len(picked) >= MAX_SENTENCES or scores[i] < KEEP_SAME_SOURCE * best:
                break
            if sources[i] != sources[order[0]] and scores[i] < KEEP_OTHER_SOURCE * best:
                continue
            if any(candidates[i][1] == candidates[j][1] for j in picked):
                continue
            picked.append(int(i))
        return [candidates[i] for i in picked]

    def compose(self, request: GenerationRequest) -> str:
        picked = self.key_sentences(request.question, request.passages)
        return " ".join(f"{sentence} [{marker}]" for marker, sentence in picked) if picked else REFUSAL

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        for piece in re.findall(r"\S+\s*", self.compose(request)):
            yield piece
