"""What every reader shares: the parsed shape, text decoding, the binary check and the HTML reader."""

from __future__ import annotations

from rag.types import Frozen, Section

# Office files saved with a password are OLE compound files holding these streams (MS-OFFCRYPTO).
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")
# A section's header rides along with every chunk of it (embedded with it, shown to a model):
# long enough for a sheet's column names or a message's headers, short enough to leave room.
SECTION_HEADER_WORDS = 40


class Parsed(Frozen):
    """A file's text as the chunker sees it, where its pages start and its sections' headers."""

    text: str
    page_starts: tuple[int, ...] = ()  # a PDF's pages, a deck's slides, a book's chapters, a workbook's sheets
    sections: tuple[Section, ...] = ()


def decode_text(data: bytes) -> str:
    """Decode bytes as UTF-8, falling back to detection, never raising."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        matches = from_bytes(data)
        best = matches.best()
        # Short Western texts often tie between code pages (cp1250 turns "ï" into "ď");
        # on a tie prefer windows-1252, the most common legacy encoding.
        for match in matches:
            if (
                best is not None
                and match.encoding == "cp1252"
                and match.chaos <= best.chaos
                and match.coherence >= best.coherence
            ):
                best = match
                break
        text = str(best) if best is not None else data.decode("utf-8", errors="replace")
    # Normalise newlines so character offsets and line numbers agree with what editors show.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def looks_binary(data: bytes) -> bool:
    """Whether bytes look like a binary file rather than text (NULs or many control characters)."""
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    if not sample:
        return False
    control = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return control / len(sample) > 0.10


def one_line(text: str) -> str:
    """Line breaks and tabs inside a paragraph or a cell become spaces, so it stays one line."""
    return " ".join(text.split())


def html_text(markup: str) -> str:
    """The visible text of an HTML page, one non-empty line per block (scripts and styles dropped)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = [line.strip() for line in soup.get_text("\n").splitlines()]
    return "\n".join(line for line in lines if line)


def short_header(text: str) -> str:
    """A section header cut to SECTION_HEADER_WORDS words, on one line."""
    words = text.split()
    return " ".join(words[:SECTION_HEADER_WORDS]) + (" ..." if len(words) > SECTION_HEADER_WORDS else "")


def join_parts(parts: list[str]) -> tuple[str, tuple[int, ...]]:
    """Parts (pages, slides, sheets, chapters) joined by a blank line, and where each starts."""
    starts: list[int] = []
    text = ""
    for part in parts:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += part
    return text, tuple(starts)
