"""Small text helpers shared by prompting, citations and the extractive backend."""

from __future__ import annotations

import re
from functools import lru_cache

_BREAK = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s)|\n")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof inc ltd co corp vs etc e.g i.e st jr sr no fig al approx dept est".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*$")
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in
    into is it its of on or that the their them then there these they this those to was were what
    when where which who whom whose why will with would you your about after also any both each
    few more most other same so such than too very s t just don should now according say says said
    described mentioned named still yet already even however""".split()
)


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the period at `dot` ends an abbreviation ("U.S.", "Dr.") rather than a sentence."""
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].strip("\"'(\u201c\u2018").lower()
    return len(word) == 1 or "." in word or word in _ABBREVIATIONS


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences in text[start:end], whitespace trimmed; newlines and
    sentence punctuation end a sentence, abbreviations and a following lower-case word do not."""
    end = len(text) if end is None else end
    spans, pos = [], start
    for m in _BREAK.finditer(text, start, end):
        if m.group() != "\n":
            nxt = m.end()
            while nxt < end and text[nxt] in " \t":
                nxt += 1
            if text[m.start()] == "." and _is_abbreviation(text, m.start()):
                continue
            if nxt < end and text[nxt].islower():
                continue
        spans.append((pos, m.end() if m.group() != "\n" else m.start()))
        pos = m.end()
    spans.append((pos, end))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of text that contain at least one word."""
    return [(s, e) for s, e in sentence_spans(text) if e - s >= 2 and _WORD.search(text, s, e)]


def without_repeats(text: str) -> str:
    """The text with every sentence that repeats an earlier one word for word dropped (a small
    model's loop: "[19] mentions Alibaba Cloud." three times over)."""
    seen: set[str] = set()
    pieces, pos = [], 0
    for s, e in sentences(text):
        key = " ".join(_WORD.findall(text[s:e].lower()))
        if key in seen:
            pieces.append(text[pos:s].rstrip())
            pos = e
        seen.add(key)
    return "".join(pieces) + text[pos:]


def is_heading(sentence: str) -> bool:
    """A short line without closing punctuation: a title or heading, which names a topic but
    answers nothing."""
    return len(sentence.split()) < 12 and not _SENTENCE_END.search(sentence)


def heading_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the lines that stand alone as headings (a title, a section name, a
    commenter's name line), whitespace trimmed, in order.

    A heading line is heading-like (see is_heading), holds a word, and opens a block: it is the
    first line, or follows a blank line, a finished sentence, a line ending in a colon or another
    heading. A line that a PDF wrapped in mid-sentence is not one: it starts lower-case, ends on
    a stop word or a comma, or the next line carries on in lower case.
    """
    lines = text.split("\n")
    out: list[tuple[int, int]] = []
    opens, pos = True, 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        start = pos + len(line) - len(line.lstrip())
        pos += len(line) + 1
        if not stripped:
            opens = True
            continue
        following = lines[i + 1].lstrip() if i + 1 < len(lines) else ""
        heading = opens and is_heading(stripped) and _stands_alone(stripped, following)
        if heading:
            out.append((start, start + len(stripped)))
        opens = heading or stripped.endswith(":") or bool(_SENTENCE_END.search(stripped))
    return out


def _stands_alone(line: str, following: str) -> bool:
    """Whether a short line reads as a whole heading rather than part of a wrapped sentence."""
    words = _WORD.findall(line.lower())
    if not words or line[0].islower() or words[-1] in STOPWORDS or line[-1] in ",;-\u2013\u2014/&":
        return False
    return not following[:1].islower()


@lru_cache(maxsize=1)
def stemmer():
    """The English Snowball stemmer (PyStemmer), shared by BM25 and the sentence scorers."""
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # stemming improves recall; without PyStemmer plain words still work
        return None


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed content words."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
    snowball = stemmer()
    return snowball.stemWords(words) if snowball else words


def clean_question(text: str) -> str:
    """Drop NUL and control characters (keeping newlines and tabs) and collapse whitespace."""
    text = "".join(ch for ch in text if ch in "\n\t" or (ord(ch) >= 32 and ord(ch) != 127))
    return re.sub(r"\s+", " ", text).strip()


def lines_label(start: int, end: int, page: int | None = None, *, sep: str = " · ") -> str:
    """Where a citation points, as a person reads it: `line 4`, `lines 4–9`, with the page."""
    label = f"line {start}" if start == end else f"lines {start}–{end}"
    return f"{label}{sep}page {page}" if page else label
