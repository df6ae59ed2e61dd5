"""Spreadsheets (.xlsx) and CSV files: a row a line, `Row N: cell | cell.`, so a quote says which
row; each sheet a page and a section whose chunks carry the sheet's name and header row, so a row
read alone is understood."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time

from rag.errors import LoaderError
from rag.loaders.archive import check_archive
from rag.loaders.base import Parsed, decode_text, join_parts, one_line, short_header
from rag.types import Section

HEADER_SEPARATOR = " > "  # as rag.chunking joins a title and a heading


def load_xlsx(data: bytes, name: str) -> Parsed:
    """A workbook's sheets, one a page, their values (not formulas) a row a line."""
    check_archive("xlsx", data)
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sheets = [(sheet.title, _rows(sheet.iter_rows(values_only=True))) for sheet in book.worksheets]
        finally:
            book.close()
    except Exception as exc:  # openpyxl, zipfile and lxml raise many types on damaged parts
        raise LoaderError(f"not a readable Excel workbook ({type(exc).__name__}: {exc})") from None
    sheets = [(title, rows) for title, rows in sheets if rows]
    if not sheets:
        raise LoaderError("the workbook is empty (no values in its sheets)")
    text, starts = join_parts([_lines(rows) for _, rows in sheets])
    sections = tuple(
        Section(start=start, header=_header(title, rows[0][1])) for start, (title, rows) in zip(starts, sheets)
    )
    return Parsed(text=text, page_starts=starts, sections=sections)


def load_csv(data: bytes, name: str) -> Parsed:
    """A CSV file's records a row a line (row N is the N-th record, as a spreadsheet numbers it)."""
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = _rows(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise LoaderError(f"not a readable CSV file ({exc})") from None
    if not rows:
        raise LoaderError("the CSV file is empty (no values in its rows)")
    return Parsed(text=_lines(rows), sections=(Section(start=0, header=_header("", rows[0][1])),))


def _rows(records) -> list[tuple[int, list[str]]]:
    """(row number, cells) of the records that hold a value, trailing empty cells dropped."""
    rows = []
    for number, record in enumerate(records, start=1):
        cells = [_cell(value) for value in record]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            rows.append((number, cells))
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ", timespec="minutes")
    if isinstance(value, (date, time)):
        return value.isoformat()
    return one_line(str(value))


def _lines(rows: list[tuple[int, list[str]]]) -> str:
    """`Row N: cell | cell.` a line: a full stop makes a row a statement, which the select stage
    and the extractive answer quote (a short line without one reads as a heading and is passed over)."""
    lines = []
    for number, cells in rows:
        line = f"Row {number}: {' | '.join(cells)}"
        lines.append(line if line[-1] in ".!?" else line + ".")
    return "\n".join(lines)


def _header(sheet: str, columns: list[str]) -> str:
    """The sheet's name and its first row (the column names), as every chunk of the sheet carries them."""
    names = " | ".join(columns).replace(HEADER_SEPARATOR, " - ")
    return short_header(HEADER_SEPARATOR.join(p for p in (sheet.replace(HEADER_SEPARATOR, " - "), names) if p))
