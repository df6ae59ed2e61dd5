"""Turn `[n]` markers into verified citations: bounds-checked, quoted, checked against the file.

An answer's markers are parsed once (`parse`) into a MarkedText, its claims each a sentence with
the markers it carries; marker correction, attribution and the citations read that record. How
well each passage supports each claim is one table per answer (`Support`): the passages'
sentences are embedded once, whichever step asks first.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from rag.chunking import line_span
from rag.embedding import Embedder, embed_cached
from rag.text import sentences, terms
from rag.types import Citation, Claim, Hit, MarkedText

MARKER = re.compile(r"\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
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


def parse(raw: str, n_passages: int) -> MarkedText:
    """The draft's text with its markers checked (`parse_markers`), split into claims: the one
    parse of an answer's markers, which every later step reads."""
    text, markers = parse_markers(raw, n_passages)
    return MarkedText(text=text, markers=markers, claims=split_claims(text))


def split_claims(text: str) -> list[Claim]:
    """The answer's sentences with the markers each carries.

    A marker written after the full stop ("... in 1918. [2] Hekla ...") opens the next span of
    the sentence splitter; it belongs to the sentence before it, not the one after. Markers
    before the first sentence are its `opening`: marker correction reads them as its own, a
    citation's quote does not.
    """
    claims: list[Claim] = []
    for s, e in sentences(text):
        lead = _MARKER_RUN.match(text, s, e)
        body = lead.end() if lead else s
        while body < e and text[body].isspace():
            body += 1
        if lead and claims:
            last = claims[-1]
            claims[-1] = last.model_copy(update={"end": lead.end(), "markers": last.markers + _numbers(lead.group())})
            if body < e:
                claims.append(_claim(text, body, body, e))
        else:
            claims.append(_claim(text, s, body, e))
    return claims


def _claim(text: str, start: int, body: int, end: int) -> Claim:
    sentence = text[body:end]
    return Claim(start=start, end=end, sentence=sentence, text=MARKER.sub("", sentence).strip(),
                 markers=_numbers(sentence), opening=_numbers(text[start:body]))


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(n) for group in MARKER.findall(text) for n in re.findall(r"\d+", group))


def _spelling(text: str) -> str:
    # Whitespace changes no token of a sentence: one spelling, one vector in the embedder's cache
    # (the select stage's sentences are spelt so too).
    return re.sub(r"\s+", " ", text).strip()


class Support:
    """How well each numbered passage supports each claim of one answer.

    Two signals: meaning, the cosine between the claim and the passage's closest sentence
    (measured against sentences, not the passage as a whole: a claim restates one sentence, and a
    long passage's average meaning drifts away from it), and wording, the share of the claim's
    terms the passage holds (names and numbers live there). One table per answer: the passages'
    sentences are embedded once, when first asked, and each claim's row is kept, so marker
    correction, attribution and the draft check read the same table.
    """

    def __init__(self, passages: list[Hit], embedder: Embedder) -> None:
        self.passages = passages
        self.embedder = embedder
        self._sentences: tuple[np.ndarray, np.ndarray] | None = None  # vectors, passage of each
        self._terms: list[set[str]] | None = None
        self._rows: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, passages: list[Hit], embedder: Embedder | None) -> Support | None:
        """The table for these passages; None without passages or an embedder to compare with."""
        return cls(passages, embedder) if passages and embedder is not None else None

    def _passage_sentences(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sentences is None:
            units: list[str] = []
            owners: list[int] = []
            for i, hit in enumerate(self.passages):
                text = hit.chunk.text
                parts = [text[s:e] for s, e in sentences(text)] or [text]
                units += [_spelling(part) for part in parts]
                owners += [i] * len(parts)
            self._sentences = (embed_cached(self.embedder, units), np.array(owners, dtype=np.intp))
        return self._sentences

    def similarities(self, claims: list[str]) -> np.ndarray:
        """claims x passages: the cosine between each claim and the passage's closest sentence."""
        keys = [_spelling(claim) for claim in claims]
        new = [key for key in dict.fromkeys(keys) if key not in self._rows]
        if new:
            vectors, owners = self._passage_sentences()
            for key, row in zip(new, embed_cached(self.embedder, new) @ vectors.T):
                closest = np.full(len(self.passages), -1.0, dtype=np.float32)
                np.maximum.at(closest, owners, row)
                self._rows[key] = closest
        return np.array([self._rows[key] for key in keys], dtype=np.float32).reshape(len(keys), len(self.passages))

    def coverage(self, claim: str) -> np.ndarray:
        """The share of the claim's terms each passage holds (none, for a claim without terms)."""
        if self._terms is None:
            self._terms = [set(terms(hit.chunk.text)) for hit in self.passages]
        claim_terms = set(terms(claim)) or {""}
        return np.array([len(claim_terms & passage) / len(claim_terms) for passage in self._terms])

    def backs(self, claims: list[str]) -> list[bool]:
        """Whether some passage supports each claim, by either signal: meaning (a sentence's
        cosine clears ATTRIBUTION_THRESHOLD) or wording (REPOINT_COVERAGE of its terms)."""
        rows = self.similarities(claims)
        return [bool(row.max() >= ATTRIBUTION_THRESHOLD or self.coverage(claim).max() >= REPOINT_COVERAGE)
                for claim, row in zip(claims, rows)]


def supported(claims: list[str], passages: list[Hit], embedder: Embedder) -> list[bool]:
    """Whether some passage supports each claim (`Support.backs`, for claims on their own)."""
    support = Support.of(passages, embedder)
    return support.backs(claims) if support is not None and claims else [False] * len(claims)


def _with_marker(sentence: str, marker: int) -> str:
    """The sentence with its markers replaced by one, where the model put its first one: after
    the full stop or before it."""
    first = MARKER.search(sentence)
    after_stop = first is not None and sentence[: first.start()].rstrip()[-1:] in (".", "!", "?")
    fixed = re.sub(r"[ \t]+([.,;:!?])", r"\1", MARKER.sub("", sentence)).rstrip()
    if after_stop or not fixed or fixed[-1] not in ".!?":
        return f"{fixed} [{marker}]"
    return f"{fixed[:-1]} [{marker}]{fixed[-1]}"


def repoint_markers(marked: MarkedText, support: Support | None) -> str:
    """Re-point markers a model put on the wrong passage.

    Small models often copy a claim from passage 1 and cite [3]. A sentence whose cited passages
    do not support it (below ATTRIBUTION_THRESHOLD) while another passage clearly does (above it,
    by at least REPOINT_MARGIN) gets that passage's marker instead. Everything else is left as the
    model wrote it.
    """
    text = marked.text
    if support is None:
        return text
    n_passages = len(support.passages)
    kept = [c for c in marked.claims if (c.opening or c.markers) and terms(c.text)]
    if not kept:
        return text
    out, pos = [], 0
    for row, claim in zip(support.similarities([c.text for c in kept]), kept):
        cited = [n for n in claim.opening + claim.markers if 1 <= n <= n_passages]
        if not cited:
            continue
        # Two signals, either enough: meaning (the closest sentence's cosine) and wording (the
        # share of the claim's terms the passage contains; names and numbers live there).
        claim_terms = set(terms(claim.text))
        cover = support.coverage(claim.text)
        best_cover = int(np.argmax(cover))
        best = int(np.argmax(row))
        backing = max(row[n - 1] for n in cited)
        cited_cover = max(cover[n - 1] for n in cited)
        if (
            len(claim_terms) >= 2
            and cited_cover < 0.5
            and cover[best_cover] >= REPOINT_COVERAGE
            and cover[best_cover] - cited_cover >= REPOINT_MARGIN_TERMS
        ):
            best = best_cover
        elif not (backing < ATTRIBUTION_THRESHOLD <= row[best] and row[best] - backing >= REPOINT_MARGIN):
            continue
        out.append(text[pos : claim.start])
        out.append(_with_marker(text[claim.start : claim.end], best + 1))
        pos = claim.end
    out.append(text[pos:])
    return "".join(out)


def attribute_claims(marked: MarkedText, support: Support | None) -> str:
    """For an answer without markers: append to each sentence the marker of the passage that
    supports it best, when the support (embedding similarity) clears the threshold."""
    text = marked.text
    if support is None or not marked.claims:
        return text
    out, pos = [], 0
    for claim, row in zip(marked.claims, support.similarities([c.sentence for c in marked.claims])):
        best = int(np.argmax(row))
        out.append(text[pos : claim.end])
        if row[best] >= ATTRIBUTION_THRESHOLD:
            out.append(f" [{best + 1}]")
        pos = claim.end
    out.append(text[pos:])
    return "".join(out)


def _marked(text: str, markers: list[int] | None = None) -> MarkedText:
    """A text's record without the markers' check: for the functions below, given one text."""
    return MarkedText(text=text, markers=markers or [], claims=split_claims(text))


def correct_markers(text: str, passages: list[Hit], embedder: Embedder | None) -> str:
    """`repoint_markers` for one text on its own."""
    return repoint_markers(_marked(text), Support.of(passages, embedder))


def attribute(text: str, passages: list[Hit], embedder: Embedder | None) -> str:
    """`attribute_claims` for one text on its own (a text without markers)."""
    return attribute_claims(_marked(text), Support.of(passages, embedder))


def _citing(marked: MarkedText, marker: int) -> str:
    """The answer sentences that carry a given marker (the whole answer when none does)."""
    found = [c.sentence for c in marked.claims if c.sentence and marker in c.markers]
    return " ".join(found) or marked.text


def claims_for(text: str, marker: int) -> str:
    """The answer sentences that carry a given marker."""
    return _citing(_marked(text), marker)


def best_quote(hit: Hit, claim: str) -> tuple[str, int, int]:
    """The sentence of the passage closest to the claim (by shared terms), with its line span."""
    chunk = hit.chunk
    spans = sentences(chunk.text) or [(0, len(chunk.text))]
    claim_terms = set(terms(MARKER.sub("", claim)))
    best = max(spans, key=lambda sp: (len(claim_terms & set(terms(chunk.text[sp[0] : sp[1]]))), -sp[0]))
    first, last = line_span(chunk, *best)
    return chunk.text[best[0] : best[1]], first, last


def verify(quote: str, start_line: int, end_line: int, file_text: str | None) -> bool:
    """Whether the quote appears verbatim (modulo whitespace) at those lines of the file."""
    if file_text is None:
        return False
    lines = file_text.split("\n")[start_line - 1 : end_line]
    squash = lambda s: " ".join(s.split())  # noqa: E731
    return bool(quote.strip()) and squash(quote) in squash("\n".join(lines))


def cite(marked: MarkedText, passages: list[Hit], read_file: Callable[[str], str | None]) -> list[Citation]:
    """One Citation per marker used, quoting the passage sentence that supports it."""
    citations = []
    for marker in marked.markers:
        hit = passages[marker - 1]
        quote, first, last = best_quote(hit, _citing(marked, marker))
        citations.append(
            Citation(
                marker=marker,
                source=hit.chunk.source,
                start_line=first,
                end_line=last,
                page=hit.chunk.page,
                quote=quote,
                score=round(hit.dense_score if hit.dense_score is not None else hit.score, 4),
                verified=verify(quote, first, last, read_file(hit.chunk.source)),
            )
        )
    return citations


def build_citations(
    text: str,
    markers: list[int],
    passages: list[Hit],
    read_file: Callable[[str], str | None],
) -> list[Citation]:
    """`cite` for a text and its markers on their own."""
    return cite(_marked(text, markers), passages, read_file)
