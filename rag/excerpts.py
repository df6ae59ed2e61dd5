"""The windowed context: only the sentences that answer best, with their neighbours.

A model reads its prompt before it writes a word, and on a laptop CPU reading is what the user
waits for. Instead of five whole passages (~900 tokens), the prompt carries excerpts: the select
stage's best sentences, each with a window of neighbouring sentences (a heading or a name on the
line above comes with it), up to a token budget. Each excerpt is a verbatim slice of its chunk,
so a `[n]` marker on it still maps to exact, verifiable lines of the file.
"""

from __future__ import annotations

from rag.chunking import count_tokens, line_span, rehead
from rag.text import sentences
from rag.types import Highlight, Hit, Selection


def slice_hit(hit: Hit, start: int, end: int) -> Hit:
    """The hit narrowed to chunk.text[start:end] (trailing whitespace dropped), still a verbatim
    slice of its file with its own line span, under the chunk's header (its heading the chunk's
    nearest heading line at or above the slice, when the chunk holds one)."""
    chunk = hit.chunk
    text = chunk.text[start:end].rstrip()
    first_line, last_line = line_span(chunk, start, start + len(text))
    narrowed = chunk.model_copy(
        update={
            "text": text,
            "start_char": chunk.start_char + start,
            "end_char": chunk.start_char + start + len(text),
            "start_line": first_line,
            "end_line": last_line,
            "tokens": count_tokens(text),
            "header": rehead(chunk.header, chunk.text, start),
        }
    )
    return hit.model_copy(update={"chunk": narrowed})


def _pick(selection: Selection, hits: list[Hit], spans: list[list[tuple[int, int]]], budget: int,
          neighbours: int) -> list[set[int]]:
    """Which sentences of each passage to keep: windows around the best sentences, best first,
    until the budget is spent (the best one always fits)."""
    kept: list[set[int]] = [set() for _ in spans]
    used = 0
    for item in selection.ranked:
        p = item.marker - 1
        try:
            i = spans[p].index((item.start, item.end))
        except ValueError:
            continue
        new = set(range(max(0, i - neighbours), min(len(spans[p]), i + neighbours + 1))) - kept[p]
        if not new:
            continue
        cost = sum(count_tokens(hits[p].chunk.text[slice(*spans[p][j])]) for j in new)
        if used and used + cost > budget:
            continue
        kept[p] |= new
        used += cost
        if used >= budget:
            break
    return kept


def excerpts(selection: Selection, hits: list[Hit], *, budget: int, neighbours: int = 1) -> tuple[list[Hit], list[Highlight]]:
    """(The excerpts to number in the prompt, the key sentences re-pointed at them).

    Excerpts follow retrieval order, the passages of one file together (so a brief label names
    it once), then position in the passage; runs of kept sentences become one excerpt each.
    """
    spans = [sentences(h.chunk.text) for h in hits]
    kept = _pick(selection, hits, spans, budget, neighbours)
    first = {source: i for i, source in enumerate(dict.fromkeys(h.chunk.source for h in hits))}
    order = sorted(range(len(hits)), key=lambda p: first[hits[p].chunk.source])
    out: list[Hit] = []
    where: list[tuple[int, int, int]] = []  # (passage index, start, end) of each excerpt
    for p in order:
        chosen = kept[p]
        run: list[int] = []
        for i in sorted(chosen) + [-1]:
            if run and (i == -1 or i != run[-1] + 1):
                start, end = spans[p][run[0]][0], spans[p][run[-1]][1]
                out.append(slice_hit(hits[p], start, end))
                where.append((p, start, end))
                run = []
            if i != -1:
                run.append(i)
    key = []
    for h in selection.key:
        for n, (p, start, end) in enumerate(where, start=1):
            if p == h.marker - 1 and start <= h.start and h.end <= end:
                key.append(h.model_copy(update={"marker": n, "start": h.start - start, "end": h.end - start}))
                break
    return out, key
