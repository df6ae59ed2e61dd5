"""Benchmark corpora (BEIR-style corpus.jsonl) written out as one text file a document.

The files go into a cache folder outside the repository, so the product's own loader, chunker
and incremental index see them exactly as they would see a user's documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rag.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def cache_root() -> Path:
    """Where benchmark corpora and their indexes live: RAG_EVAL_CACHE, else ~/.cache/rag."""
    configured = os.environ.get("RAG_EVAL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def file_name(doc_id: str) -> str:
    """`<id>.txt`, with characters a file name cannot safely hold replaced and a hash added."""
    safe = _UNSAFE.sub("_", doc_id)
    if safe != doc_id or safe.startswith(".") or not safe:
        safe = f"{safe.lstrip('.')}_{hashlib.sha1(doc_id.encode()).hexdigest()[:8]}"
    return f"{safe}.txt"


def document_text(title: str, text: str) -> str:
    """Title, a blank line, then the text (the title alone when there is no text)."""
    title, text = (title or "").strip(), (text or "").strip()
    if title and text:
        return f"{title}\n\n{text}\n"
    return f"{title or text}\n"


def read_jsonl(path: Path) -> Iterator[dict]:
    """The objects of a JSON-lines file, naming the line of a malformed one."""
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object")
            yield record


def write_corpus(corpus_jsonl: Path, folder: Path, *, prune: bool = True) -> dict[str, str]:
    """Write each document of corpus.jsonl as `<id>.txt` into folder; return id -> file name.

    Files whose content is unchanged are not rewritten, so the incremental index reuses them;
    with `prune`, other .txt files in the folder (documents no longer in the corpus) are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for record in read_jsonl(corpus_jsonl):
        doc_id = str(record.get("_id", record.get("id", "")))
        if not doc_id:
            raise ConfigError(f"{corpus_jsonl}: a document has no `_id`")
        name = file_name(doc_id)
        if name in names.values() and names.get(doc_id) != name:
            raise ConfigError(f"{corpus_jsonl}: two document ids map to the file name {name}")
        names[doc_id] = name
        content = document_text(str(record.get("title") or ""), str(record.get("text") or ""))
        path = folder / name
        data = content.encode("utf-8")
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    if prune:
        keep = set(names.values())
        for path in folder.glob("*.txt"):
            if path.name not in keep:
                path.unlink()
    return names
