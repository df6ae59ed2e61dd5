"""PowerPoint decks (.pptx): one slide a page (so a citation names its slide), its text then its
notes, each slide a section whose chunks carry "Slide N: its title"."""

from __future__ import annotations

import io

from rag.errors import LoaderError
from rag.loaders.archive import check_archive
from rag.loaders.base import Parsed, join_parts, one_line, short_header
from rag.types import Section


def load_pptx(data: bytes, name: str) -> Parsed:
    """A deck's slides, one a page, each its text and notes."""
    check_archive("pptx", data)
    from pptx import Presentation

    try:
        slides = [_slide(slide) for slide in Presentation(io.BytesIO(data)).slides]
    except Exception as exc:  # python-pptx and lxml raise many types on damaged parts
        raise LoaderError(f"not a readable PowerPoint presentation ({type(exc).__name__}: {exc})") from None
    if not any(lines for _, lines in slides):
        raise LoaderError("the presentation is empty (no text on its slides or in their notes)")
    text, starts = join_parts(["\n".join(lines) for _, lines in slides])
    sections = tuple(
        Section(start=start, header=short_header(f"Slide {n}: {title}" if title else f"Slide {n}"))
        for n, (start, (title, _)) in enumerate(zip(starts, slides), start=1)
    )
    return Parsed(text=text, page_starts=starts, sections=sections)


def _slide(slide) -> tuple[str, list[str]]:
    """A slide's title and its lines: the title, the other shapes in order, then its notes."""
    title_shape = slide.shapes.title
    title = one_line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    lines = [title] if title else []
    for shape in slide.shapes:
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        lines.extend(_shape_lines(shape))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = [one_line(p.text) for p in slide.notes_slide.notes_text_frame.paragraphs]
        notes = [line for line in notes if line]
        if notes:
            lines += ["Notes:", *notes]
    return title, lines


def _shape_lines(shape) -> list[str]:
    """A shape's text, a paragraph a line; a table a row a line; a group its shapes in order."""
    if getattr(shape, "shapes", None) is not None and shape.shape_type == 6:  # MSO_SHAPE_TYPE.GROUP
        return [line for inner in shape.shapes for line in _shape_lines(inner)]
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = []
        for row in shape.table.rows:
            cells = [one_line(cell.text) for cell in row.cells]
            if any(cells):
                rows.append(" | ".join(cells))
        return rows
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        return [line for p in shape.text_frame.paragraphs if (line := one_line(p.text))]
    return []
