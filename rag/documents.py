"""Adding and removing documents: the one place upload rules live.

The seeds folder stays the single source of truth: files are written into it (atomically, never
outside it) and the index is brought up to date with an incremental build, so the watcher,
`rag index` and the page all see the same documents. Nothing a client sends is trusted: names,
types, sizes and contents are checked here.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rag import faiss_folder as store, loaders
from rag.config import Settings
from rag.embedding import Embedder
from rag.errors import LoaderError, RagError, UploadError
from rag.indexer import Warn, build_index
from rag.types import Frozen

MAX_NAME_BYTES = 200
# Names Windows reserves whatever the extension; a seeds folder may be synced to one.
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in "0123456789¹²³"}
)
_FORBIDDEN_CHARS = frozenset('/\\<>:"|?*')
_MB = 1024 * 1024


class AddResult(Frozen):
    """What became of one file: indexed, skipped by the indexer, or refused (nothing written).

    `reason` is a plain sentence that starts with the file name, ready to show as is.
    """

    name: str
    state: Literal["indexed", "skipped", "refused"]
    reason: str | None = None
    chunks: int = 0


def check_name(name: str) -> str:
    """The name as it will be stored (NFC), or UploadError saying why it is not a plain file name."""
    shown = repr(name) if any(ord(c) < 32 or ord(c) == 127 for c in name) else f"'{name}'"
    name = unicodedata.normalize("NFC", name)
    if not name.strip():
        raise UploadError("a file name is empty")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        raise UploadError(f"{shown}: control characters are not allowed in a file name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UploadError(f"{shown}: give a plain file name, without folders or '..'")
    if name.startswith("."):
        raise UploadError(f"{shown}: hidden names (starting with '.') are not indexed; rename the file")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS})
    if bad:
        raise UploadError(f"{shown}: the characters {' '.join(bad)} are not allowed in a file name")
    if name != name.rstrip(" ."):
        raise UploadError(f"{shown}: a file name may not end with a space or a dot")
    if name.split(".", 1)[0].strip().upper() in _RESERVED:
        raise UploadError(f"{shown}: {name.split('.', 1)[0]} is a reserved device name; rename the file")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UploadError(f"{shown[:60]}...: file names are limited to {MAX_NAME_BYTES} bytes")
    return name


def _check_relative(rel: str) -> str:
    """A path inside the seeds folder for removal: every part a plain name (forward slashes)."""
    if not rel or rel.startswith("/") or "\\" in rel:
        raise UploadError(f"'{rel}': give the document's name as listed in the index")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise UploadError(f"'{rel}': give the document's name as listed in the index, without '..'")
    return "/".join(check_name(part) for part in rel.split("/"))


def _inside(root: Path, rel: str) -> Path:
    path = root / rel
    resolved = path.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise UploadError(f"'{rel}': outside the seeds folder")
    return path


def sniff(name: str, data: bytes) -> None:
    """Raise UploadError when the content is not what the extension says (a renamed binary).

    A zip-based document (docx, pptx, xlsx, epub) is judged from its zip directory alone: what it
    must hold, encryption, and a total unpacked size and ratio that rule out a zip bomb.
    """
    kind = loaders.SUPPORTED[Path(name).suffix.lower()]
    if kind == "pdf":
        if not data.startswith(b"%PDF-"):
            raise UploadError(f"{name}: not a PDF (it does not start with %PDF-); was it renamed?")
    elif kind in loaders.ZIP_PARTS:
        try:
            loaders.check_archive(kind, data)
        except LoaderError as exc:
            renamed = "; was it renamed?" if "not a zip archive" in str(exc) else ""
            raise UploadError(f"{name}: {exc}{renamed}") from None
    else:
        if b"\x00" in data:
            raise UploadError(f"{name}: contains NUL bytes, so it is a binary file, not {kind} text")
        if loaders.looks_binary(data) or not _decodes(data):
            raise UploadError(f"{name}: does not read as text; was a binary file renamed to {kind}?")


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        return from_bytes(data).best() is not None


def _limits(settings: Settings) -> tuple[int, int]:
    return int(settings.upload_max_mb * _MB), int(settings.upload_max_total_mb * _MB)


def _require_enabled(settings: Settings, doing: str) -> Path:
    if not settings.uploads_enabled:
        raise UploadError(
            f"{doing} documents is turned off here (RAG_UPLOADS_ENABLED=false); "
            "set RAG_UPLOADS_ENABLED=true to allow it"
        )
    return settings.require_seeds_dir().resolve()


def _size_label(size: int) -> str:
    return f"{size / _MB:.1f} MB"


def _read_inputs(
    files: Sequence[tuple[str, bytes]] | Sequence[Path], per_file: int, total_limit: int
) -> list[tuple[str, bytes | None, str | None]]:
    """(name, bytes or None, refusal) per input; a file over the limit is not even read."""
    items: list[tuple[str, bytes | None, str | None]] = []
    total = 0
    for item in files:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            name = path.name
            try:
                size = path.stat().st_size
                if not path.is_file():
                    items.append((name, None, f"{path}: not a file"))
                    continue
                if size > per_file:
                    items.append((name, None, _too_big(name, size, per_file)))
                    continue
                data = path.read_bytes()
            except FileNotFoundError:
                items.append((name, None, f"{path}: no such file"))
                continue
            except OSError as exc:
                items.append((name, None, f"{path}: cannot read ({exc.strerror or exc})"))
                continue
        else:
            name, data = item
            if not isinstance(name, str) or not isinstance(data, (bytes, bytearray)):
                raise UploadError("each upload must be a (file name, bytes) pair or a path")
            data = bytes(data)
        if len(data) > per_file:
            items.append((name, None, _too_big(name, len(data), per_file)))
            continue
        total += len(data)
        items.append((name, data, None))
    if total > total_limit:
        raise UploadError(
            f"this upload is {_size_label(total)} in all, over the {_size_label(total_limit)} limit "
            "(RAG_UPLOAD_MAX_TOTAL_MB); nothing was added — send fewer files at a time"
        )
    return items


def _too_big(name: str, size: int, limit: int) -> str:
    return f"{name}: {_size_label(size)} is over the {_size_label(limit)} limit per file (RAG_UPLOAD_MAX_MB)"


def _refusal(name: str, data: bytes, settings: Settings, root: Path, overwrite: bool) -> str | None:
    """Why this file may not be added, or None when it may."""
    try:
        name = check_name(name)
    except UploadError as exc:
        return str(exc)
    suffix = Path(name).suffix.lower()
    if suffix not in settings.upload_types:
        accepted = ", ".join(settings.upload_types) or "none"
        return f"{name}: {suffix or 'files without an extension'} not accepted (accepted: {accepted}; RAG_UPLOAD_TYPES)"
    if not data:
        return f"{name}: the file is empty"
    try:
        sniff(name, data)
        target = _inside(root, name)
    except UploadError as exc:
        return str(exc)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        return f"{name}: something that is not a plain file already has this name in the seeds folder"
    if target.exists() and not overwrite:
        return f"{name}: a document with this name already exists; pass overwrite (rag add --overwrite) to replace it"
    # Read it as the indexer will, so a file that cannot be indexed is refused before it is written.
    try:
        document = loaders.parse(loaders.SourceFile(name, target), data)
    except LoaderError as exc:
        return str(exc)
    if not document.text.strip():
        return f"{name}: no text to index (a scanned PDF is read only with RAG_OCR=auto and tesseract-ocr installed)"
    return None


def _write(root: Path, name: str, data: bytes, overwrite: bool) -> None:
    """Write atomically: a temporary file in the seeds folder, then a rename into place."""
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        target = root / name
        if overwrite:
            os.replace(tmp, target)
        else:
            # link() fails if the name was taken meanwhile, where replace() would overwrite it.
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise UploadError(
                    f"{name}: a document with this name already exists; pass overwrite "
                    "(rag add --overwrite) to replace it"
                ) from None
            except OSError:  # a file system without hard links
                if target.exists():
                    raise UploadError(f"{name}: a document with this name already exists") from None
                os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def add_documents(
    files: Sequence[tuple[str, bytes]] | Sequence[Path],
    settings: Settings,
    *,
    overwrite: bool = False,
    embedder: Embedder | None = None,
    warn: Warn | None = None,
) -> list[AddResult]:
    """Check and write files into the seeds folder, then index them; one result per file, in order."""
    root = _require_enabled(settings, "Adding")
    per_file, total_limit = _limits(settings)
    inputs = _read_inputs(files, per_file, total_limit)
    results: list[AddResult | None] = []
    written: dict[str, int] = {}  # stored name -> position in results
    for name, data, refused in inputs:
        stored = unicodedata.normalize("NFC", name)
        reason = refused
        if reason is None and stored in written:
            reason = f"{stored}: given twice in one upload"
        if reason is None:
            assert data is not None
            reason = _refusal(name, data, settings, root, overwrite)
        if reason is None:
            try:
                _write(root, stored, data, overwrite)  # type: ignore[arg-type]
            except UploadError as exc:
                reason = str(exc)
            except OSError as exc:
                reason = f"{stored}: could not be saved ({exc.strerror or exc})"
        if reason is not None:
            results.append(AddResult(name=name, state="refused", reason=reason))
            continue
        written[stored] = len(results)
        results.append(None)
    if written:
        _index_written(settings, written, results, embedder, warn)
    return [r for r in results if r is not None]


def _index_written(
    settings: Settings,
    written: dict[str, int],
    results: list[AddResult | None],
    embedder: Embedder | None,
    warn: Warn | None,
) -> None:
    try:
        report = build_index(settings, embedder=embedder, warn=warn)
        manifest = store.read_manifest(settings.index_dir)
    except RagError as exc:
        for name, at in written.items():
            results[at] = AddResult(
                name=name, state="skipped", reason=f"{name}: saved, but not indexed yet: {exc}"
            )
        return
    skipped = {line.split(": ", 1)[0]: line for line in report.skipped}
    documents = manifest.documents if manifest else {}
    for name, at in written.items():
        if name in documents:
            results[at] = AddResult(name=name, state="indexed", chunks=len(documents[name].chunk_ids))
        else:
            reason = skipped.get(name, f"{name}: saved, but the index does not hold it; run `rag index`")
            results[at] = AddResult(name=name, state="skipped", reason=reason)


def remove_documents(
    names: Sequence[str],
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    warn: Warn | None = None,
) -> list[str]:
    """Delete documents from the seeds folder and re-index; all names are checked before any goes."""
    root = _require_enabled(settings, "Removing")
    targets: dict[str, Path] = {}
    for name in names:
        rel = _check_relative(unicodedata.normalize("NFC", name))
        path = _inside(root, rel)
        if not path.is_file():
            source = loaders.source_file(root, rel)
            if source.member is not None:
                message = rel.rpartition("/")[0]
                raise UploadError(f"'{rel}': an attachment of {message}; remove the message {message} instead")
            raise UploadError(f"'{rel}': no such document in the seeds folder")
        targets[rel] = path
    for path in targets.values():
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # removed meanwhile: the goal is reached
        except OSError as exc:
            raise UploadError(f"{path.name}: could not be removed ({exc.strerror or exc})") from None
    if targets:
        build_index(settings, embedder=embedder, warn=warn)
    return list(targets)
