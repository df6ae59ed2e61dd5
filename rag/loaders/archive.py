"""Zip-based formats (docx, pptx, xlsx, epub): checked before any reader opens them.

A zip bomb is refused from its directory alone (total unpacked size, and how much it expands),
and an Office file saved with a password, an OLE container rather than a zip, is named as such.
"""

from __future__ import annotations

import io
import zipfile

from rag.errors import LoaderError
from rag.loaders.base import ENCRYPTION_INFO, OLE_MAGIC

# Refuse an archive that would unpack to far more than any real document.
MAX_UNPACKED_BYTES = 512 * 1024 * 1024
# Office XML compresses about 5 to 20 times; a bomb a thousand times. Small archives are not judged
# by their ratio (a few repeated cells may compress well), only big ones.
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 20_000
# Each zip-based kind: the member it must hold, what it is called, and what an OLE container of
# that name is (an old binary format; an encrypted one is named as such by `check_zip`).
ZIP_KINDS = {
    "docx": ("word/document.xml", "Word document",
             "an old-format Word (.doc) or other Office file, not .docx; save it as .docx"),
    "pptx": ("ppt/presentation.xml", "PowerPoint presentation",
             "an old-format PowerPoint (.ppt) or other Office file, not .pptx; save it as .pptx"),
    "xlsx": ("xl/workbook.xml", "Excel workbook",
             "an old-format Excel (.xls) or other Office file, not .xlsx; save it as .xlsx"),
    "epub": ("META-INF/container.xml", "EPUB e-book", "not an EPUB e-book (an OLE file)"),
}
ZIP_PARTS = {kind: required for kind, (required, _, _) in ZIP_KINDS.items()}


def check_zip(data: bytes, required: str, what: str, old_format: str) -> frozenset[str]:
    """The member names of a zip-based document, or LoaderError: encrypted, an old binary format,
    not a zip, without its `required` member, or unpacking to too much."""
    if data.startswith(OLE_MAGIC):
        if ENCRYPTION_INFO in data:
            raise LoaderError(f"the {what} is password-protected; save a copy without a password")
        raise LoaderError(old_format)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zipped:
            infos = zipped.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise LoaderError(f"not a readable {what} (not a zip archive)") from None
    names = frozenset(info.filename for info in infos)
    if required not in names:
        raise LoaderError(f"not a {what} (the archive holds no {required})")
    unpacked = sum(info.file_size for info in infos)
    packed = max(1, sum(info.compress_size for info in infos))
    if unpacked > MAX_UNPACKED_BYTES:
        raise LoaderError(
            f"the {what} unpacks to {unpacked / 1e6:.0f} MB, over the {MAX_UNPACKED_BYTES // 2**20} MB limit"
        )
    if len(infos) > MAX_MEMBERS or (unpacked > RATIO_FLOOR_BYTES and unpacked / packed > MAX_RATIO):
        raise LoaderError(
            f"the {what} unpacks to {unpacked / 1e6:.0f} MB from {len(data) / 1e6:.1f} MB "
            f"({len(infos)} parts): refused as a likely zip bomb"
        )
    return names


def check_archive(kind: str, data: bytes) -> frozenset[str]:
    """The member names of a zip-based document of `kind`, or LoaderError: not one, encrypted,
    or unpacking to too much."""
    return check_zip(data, *ZIP_KINDS[kind])
