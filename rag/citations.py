"""Turn `[n]` markers into verified citations: bounds-checked, quoted, checked against the file."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from rag.embedding import Embedder
from rag.text import sentences, terms
from rag.types import Citation, Hit

MARKER = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
_LEADING_MARKERS = re.compile(r"^(?:\s*" + MARKER.pattern + r")+")
_MARKER_RUN = re.compile(r"(?:\s*" + MARKER.pattern + r")+")  # for .match(text, pos, endpos)
ATTRIBUTION_THRESHOLD = 0.45
REPOINT_MARGIN = 0.15
REPOINT_COVERAGE = 0.6
REPOINT_MARGIN_TERMS = 0.34


def parse_markers(text: str, n_passages: int) -> tuple[str, list[int]]:
    """Remove markers that point at no passage; return the cleaned text and the valid markers in
    order of first appearance. `[0]`, `[7]` of 5 and the like are dropped, never trusted."""
    order: list[int] = []

    def fix(match: re.Match[str]) -> str:
        numbers = [int(x) for x in re.findall(r"\d+", match.group(1))]
        valid = []
        for n in numbers:
            if 1 <= n <= n_passages and n not in valid:
                valid.append(n)
                if n not in order:
                    order.append(n)
        return "".join(f"[{n}]" for n in valid)

    cleaned = MARKER.sub(fix, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return cleaned, order


def _support(claims: list[str], passages: list[Hit], embedder: Embedder) -> np.ndarray:
    """claims x passages: how well each passage supports each claim, as the cosine between the
    claim and the passage's closest sentence.

    Measured against sentences, not the passage as a whole: a claim restates one sentence, and a
    long passage's average meaning drifts away from it.
    """
    owners: list[int] = []  # passage index of each passage sentence
    units: list[str] = []
    for i, hit in enumerate(passages):
        parts = [hit.chunk.text[s:e] for s, e in sentences(hit.chunk.text)] or [hit.chunk.text]
        units += parts
        owners += [i] * len(parts)
    vecs = embedder.embed(claims + units)
    unit_sims = vecs[: len(claims)] @ vecs[len(claims) :].T
    sims = np.full((len(claims), len(passages)), -1.0, dtype=np.float32)
    for column, owner in enumerate(owners):
        sims[:, owner] = np.maximum(sims[:, owner], unit_sims[:, column])
    return sims


def supported(claims: list[str], passages: list[Hit], embedder: Embedder) -> list[bool]:
    """Whether some passage supports each claim, by either signal of `correct_markers`: meaning
    (a sentence's cosine clears ATTRIBUTION_THRESHOLD) or wording (it holds REPOINT_COVERAGE of
    the claim's terms, where names and numbers live)."""
    if not claims or not passages:
        return [False] * len(claims)
    sims = _support(claims, passages, embedder)
    passage_terms = [set(terms(hit.chunk.text)) for hit in passages]
    out = []
    for claim, row in zip(claims, sims):
        claim_terms = set(terms(claim)) or {""}
        cover = max(len(claim_terms & pt) / len(claim_terms) for pt in passage_terms)
        out.append(bool(row.max() >= ATTRIBUTION_THRESHOLD or cover >= REPOINT_COVERAGE))
    return out


def _with_marker(sentence: str, marker: int) -> str:
    """The sentence with its markers replaced by one, where the model put its first one: after
    the full stop or before it."""
    first = MARKER.search(sentence)
    after_stop = first is not None and sentence[: first.start()].rstrip()[-1:] in (".", "!", "?")
    fixed = re.sub(r"[ \t]+([.,;:!?])", r"\1", MARKER.sub("", sentence)).rstrip()
    if after_stop or not fixed or fixed[-1] not in ".!?":
        return f"{fixed} [{marker}]"
    return f"{fixed[:-1]} [{marker}]{fixed[-1]}"


def correct_markers(text: str, passages: list[Hit], embedder: Embedder | None) -> str:
    """Re-point markers a model put on the wrong passage.

    Small models often copy a claim from passage 1 and cite [3]. A sentence whose cited passages
    do not support it (below ATTRIBUTION_THRESHOLD) while another passage clearly does (above it,
    by at least REPOINT_MARGIN) gets that passage's marker instead. Everything else is left as the
    model wrote it.
    """
    if not passages or embedder is None:
        return text
    spans: list[tuple[int, int]] = []
    for s, e in sentences(text):
        lead = _MARKER_RUN.match(text, s, e)
        if lead and spans and spans[-1][1] <= s:
            # "... in 1918. [2] Hekla ...": the marker after the full stop closes the sentence before.
            spans[-1] = (spans[-1][0], lead.end())
            s = lead.end()
            while s < e and text[s].isspace():
                s += 1
        if s < e:
            spans.append((s, e))
    spans = [(s, e) for s, e in spans if MARKER.search(text, s, e)]
    claims = [MARKER.sub("", text[s:e]).strip() for s, e in spans]
    keep = [i for i, claim in enumerate(claims) if terms(claim)]
    if not keep:
        return text
    sims = _support([claims[i] for i in keep], passages, embedder)
    passage_terms = [set(terms(hit.chunk.text)) for hit in passages]
    out, pos = [], 0
    for row, i in zip(sims, keep):
        start, end = spans[i]
        cited = [n for n in _numbers(text[start:end]) if 1 <= n <= len(passages)]
        if not cited:
            continue
        # Two signals, either enough: meaning (the closest sentence's cosine) and wording (the
        # share of the claim's terms the passage contains; names and numbers live there).
        claim_terms = set(terms(claims[i]))
        cover = np.array([len(claim_terms & pt) / len(claim_terms) for pt in passage_terms])
        best_cover = int(np.argmax(cover))
        best = int(np.argmax(row))
        support = max(row[n - 1] for n in cited)
        cited_cover = max(cover[n - 1] for n in cited)
        if (
            len(claim_terms) >= 2
            and cited_cover < 0.5
            and cover[best_cover] >= REPOINT_COVERAGE
            and cover[best_cover] - cited_cover >= REPOINT_MARGIN_TERMS
        ):
            best = best_cover
        elif not (support < ATTRIBUTION_THRESHOLD <= row[best] and row[best] - support >= REPOINT_MARGIN):
            continue
        out.append(text[pos:start])
        out.append(_with_marker(text[start:end], best + 1))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def attribute(text: str, passages: list[Hit], embedder: Embedder | None) -> str:
    """For an answer without markers: append to each sentence the marker of the passage that
    supports it best, when the support (embedding similarity) clears the threshold."""
    if not passages or embedder is None:
        return text
    spans = sentences(text)
    if not spans:
        return text
    sims = _support([text[s:e] for s, e in spans], passages, embedder)
    out, pos = [], 0
    for (start, end), row in zip(spans, sims):
        best = int(np.argmax(row))
        out.append(text[pos:end])
        if row[best] >= ATTRIBUTION_THRESHOLD:
            out.append(f" [{best + 1}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _claims(text: str) -> list[tuple[str, set[int]]]:
    """The answer's sentences with the markers each carries.

    A marker written after the full stop ("... in 1918. [2] Hekla ...") opens the next span of
    the sentence splitter; it belongs to the sentence before it, not the one after.
    """
    out: list[tuple[str, set[int]]] = []
    for start, end in sentences(text):
        sentence = text[start:end]
        lead = _LEADING_MARKERS.match(sentence)
        if lead:
            if out:
                out[-1][1].update(_numbers(lead.group()))
            sentence = sentence[lead.end() :].strip()
        if sentence:
            out.append((sentence, set(_numbers(sentence))))
    return out


def _numbers(text: str) -> list[int]:
    return [int(n) for group in MARKER.findall(text) for n in re.findall(r"\d+", group)]


def claims_for(text: str, marker: int) -> str:
    """The answer sentences that carry a given marker."""
    found = [sentence for sentence, markers in _claims(text) if marker in markers]
    return " ".join(found) or text


def best_quote(hit: Hit, claim: str) -> tuple[str, int, int]:
    """The sentence of the passage closest to the claim (by shared terms), with its line span."""
    chunk = hit.chunk
    spans = sentences(chunk.text) or [(0, len(chunk.text))]
    claim_terms = set(terms(MARKER.sub("", claim)))
    best = max(spans, key=lambda sp: (len(claim_terms & set(terms(chunk.text[sp[0] : sp[1]]))), -sp[0]))
    start, end = best
    quote = chunk.text[start:end]
    first = chunk.start_line + chunk.text.count("\n", 0, start)
    last = first + quote.count("\n")
    return quote, first, last


def verify(quote: str, start_line: int, end_line: int, file_text: str | None) -> bool:
    """Whether the quote appears verbatim (modulo whitespace) at those lines of the file."""
    if file_text is None:
        return False
    lines = file_text.split("\n")[start_line - 1 : end_line]
    squash = lambda s: " ".join(s.split())  # noqa: E731
    return bool(quote.strip()) and squash(quote) in squash("\n".join(lines))


def build_citations(
    text: str,
    markers: list[int],
    passages: list[Hit],
    read_file: Callable[[str], str | None],
) -> list[Citation]:
    """One Citation per marker used, quoting the passage sentence that supports it."""
    citations = []
    for marker in markers:
        hit = passages[marker - 1]
        quote, first, last = best_quote(hit, claims_for(text, marker))
        page = hit.chunk.page
        citations.append(
            Citation(
                marker=marker,
                source=hit.chunk.source,
                start_line=first,
                end_line=last,
                page=page,
                quote=quote,
                score=round(hit.dense_score if hit.dense_score is not None else hit.score, 4),
                verified=verify(quote, first, last, read_file(hit.chunk.source)),
            )
        )
    return citations
