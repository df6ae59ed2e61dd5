"""Word documents (.docx): one paragraph a line, tables row by row, headings located."""

from __future__ import annotations

import io

from rag.errors import LoaderError
from rag.loaders.archive import check_archive
from rag.loaders.base import Parsed, one_line
from rag.types import Frozen


class Heading(Frozen):
    """A heading of a Word document: the line it is on, its level (0 for the title) and text."""

    line: int
    level: int
    text: str


def docx_lines(data: bytes) -> tuple[list[str], list[Heading]]:
    """The paragraphs of a .docx one a line, and its headings.

    Line N is the N-th paragraph that holds text, so a citation's lines name paragraphs; a table
    row is one line (`cell | cell`), empty paragraphs (spacing) are left out.
    """
    check_archive("docx", data)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        headings: list[Heading] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                lines.extend(_table_rows(block))
                continue
            text = one_line(block.text)
            if not text:
                continue  # empty paragraphs are spacing, not content
            lines.append(text)
            level = _heading_level(block)
            if level is not None:
                headings.append(Heading(line=len(lines), level=level, text=text))
    except LoaderError:
        raise
    except Exception as exc:  # python-docx and lxml raise many types on damaged parts
        raise LoaderError(f"not a readable Word document ({type(exc).__name__}: {exc})") from None
    if not lines:
        raise LoaderError("the Word document is empty (no text in its paragraphs or tables)")
    return lines, headings


def _table_rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # noqa: SLF001  (a merged cell is listed once per grid column)
                continue
            seen.add(id(cell._tc))  # noqa: SLF001
            parts = [one_line(p.text) for p in cell.paragraphs]
            parts += [row_text for inner in cell.tables for row_text in _table_rows(inner)]
            cells.append(" ".join(p for p in parts if p))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _heading_level(paragraph) -> int | None:
    try:
        name = (paragraph.style.name or "") if paragraph.style is not None else ""
    except Exception:  # a style part that does not parse: no heading, still text
        return None
    if name == "Title":
        return 0
    if name.startswith("Heading"):
        number = name.removeprefix("Heading").strip()
        return int(number) if number.isdigit() else 1
    return None


def load_docx(data: bytes, name: str) -> Parsed:
    """A Word document's paragraphs, one a line."""
    lines, _ = docx_lines(data)
    return Parsed(text="\n".join(lines))


def docx_headings(data: bytes) -> list[Heading]:
    """The headings of a .docx with the line (= paragraph number) each is on."""
    return docx_lines(data)[1]


def heading_at(found: list[Heading], line: int) -> Heading | None:
    """The heading a line falls under (the last one at or before it), e.g. to label a citation."""
    current = None
    for heading in found:
        if heading.line > line:
            break
        current = heading
    return current
