"""Open plain, gzip, bzip2 or xz files by their extension."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
from typing import Any

from mmjax.data.sources.result import SourceError

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def compression_of(path: str | os.PathLike) -> str | None:
    """"gz", "bz2", "xz" or None, from the last extension of ``path``."""
    ext = os.path.splitext(str(path))[1].lower()
    return ext[1:] if ext in _OPENERS else None


def base_suffix(path: str | os.PathLike) -> str:
    """The extension under any compression suffix, lower case: "a.json.gz" -> ".json"."""
    name = os.path.basename(str(path)).lower()
    stem, ext = os.path.splitext(name)
    if ext in _OPENERS:
        stem, ext = os.path.splitext(stem)
    return ext


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open ``path`` for reading UTF-8 text, decompressing by extension."""
    ext = os.path.splitext(str(path))[1].lower()
    opener = _OPENERS.get(ext)
    if opener is None:
        return open(path, encoding="utf-8")
    return opener(path, "rt", encoding="utf-8")


def load_json(path: str | os.PathLike) -> Any:
    """Parse a (possibly compressed) JSON file, or a JSON-lines file (one document per line -> list).

    JSON lines are recognised by a ``.jsonl`` / ``.ndjson`` extension.
    Raises ``SourceError`` naming the file when it is missing, empty or not JSON.
    """
    if not os.path.isfile(path):
        raise SourceError(path, "file not found")
    try:
        with open_text(path) as fh:
            if base_suffix(path) in (".jsonl", ".ndjson"):
                docs = []
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            docs.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise SourceError(path, f"line {lineno} is not JSON ({exc.msg})") from exc
                if not docs:
                    raise SourceError(path, "file is empty")
                return docs
            text = fh.read()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SourceError(path, f"cannot be read ({exc})") from exc
    if not text.strip():
        raise SourceError(path, "file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(path, f"is not JSON ({exc.msg} at line {exc.lineno})") from exc
