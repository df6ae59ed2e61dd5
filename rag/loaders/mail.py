"""Mail messages (.eml): From, To, Date and Subject over every chunk, the body as text (HTML read
as the HTML reader does), and the attachments that are documents, read as documents of their own
(`mail.eml/report.pdf`: see rag.loaders.scan)."""

from __future__ import annotations

import unicodedata
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import PurePosixPath

from rag.errors import LoaderError
from rag.loaders.base import Parsed, decode_text, html_text, one_line, short_header
from rag.types import Section

HEADERS = ("From", "To", "Date", "Subject")
_ENCRYPTED_TYPES = frozenset({"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"})


def _message(data: bytes) -> EmailMessage:
    try:
        message = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as exc:  # the parser is lenient; what it still refuses is not a message
        raise LoaderError(f"not a readable mail message ({type(exc).__name__}: {exc})") from None
    if not any(message.get(name) for name in HEADERS):
        raise LoaderError("not a mail message (no From, To, Date or Subject header)")
    return message  # type: ignore[return-value]


def load_eml(data: bytes, name: str) -> Parsed:
    """A message: its headers (a line each, and the header of its chunks), its body, and the names
    of its attachments."""
    message = _message(data)
    if message.get_content_type() in _ENCRYPTED_TYPES:
        raise LoaderError("the message is encrypted (S/MIME or PGP); save a decrypted copy")
    heads = [(field, _header(message, field)) for field in HEADERS]
    heads = [(field, value) for field, value in heads if value]
    lines = [f"{field}: {value}" for field, value in heads]
    body = _body(message)
    names = list(attachments(data))
    text = "\n".join(lines) + ("\n\n" + body if body else "")
    if names:
        text += "\n\nAttachments: " + ", ".join(names)
    header = "; ".join(f"{field}: {value}" for field, value in heads).replace(" > ", " - ")
    return Parsed(text=text, sections=(Section(start=0, header=short_header(header)),))


def _header(message: EmailMessage, field: str) -> str:
    try:
        return one_line(str(message.get(field) or ""))
    except Exception:  # a malformed header that the policy cannot decode: shown as it is
        return one_line(str(message.get_all(field, [""])[0]))


def _body(message: EmailMessage) -> str:
    """The message's text: its plain part, else its HTML part read as text."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # an unknown charset: decode it ourselves
        content = decode_text(part.get_payload(decode=True) or b"")
    if not isinstance(content, str):
        return ""
    content = content.replace("\r\n", "\n").replace("\r", "\n")
    return html_text(content) if part.get_content_type() == "text/html" else content.strip()


def attachments(data: bytes) -> dict[str, bytes]:
    """A message's attached files by a safe, unique name (a plain file name, never a path)."""
    message = _message(data)
    body = message.get_body(preferencelist=("plain", "html"))
    found: dict[str, bytes] = {}
    for part in message.walk():
        if part.is_multipart() or part is body or part.get_content_type() == "message/rfc822":
            continue
        filename = part.get_filename()
        if not filename and part.get_content_disposition() != "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        found[_unique(_safe_name(filename or "attachment"), found)] = payload
    return found


def _safe_name(filename: str) -> str:
    """The last part of a sent name, without control characters or leading dots."""
    name = unicodedata.normalize("NFC", str(filename)).replace("\\", "/")
    name = PurePosixPath(name).name if "/" in name else name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().lstrip(".").strip()
    return name[:150] or "attachment"


def _unique(name: str, taken: dict[str, bytes]) -> str:
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if dot and stem else (name, "")
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{stem} ({n}){suffix}", n + 1
    return candidate
