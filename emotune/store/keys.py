"""Object key rules shared by every backend, so a key valid on disk is valid on S3 and vice versa."""

from __future__ import annotations

import re
from datetime import datetime

from emotune.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key; raise :class:`InvalidInput` otherwise.

    Refused: empty keys, absolute paths, ``..`` / ``.`` segments, empty segments (``a//b``), backslashes,
    control characters and keys over 1024 bytes. With ``prefix=True`` an empty string or a trailing ``/`` is
    allowed (listing everything / a folder).
    """
    if not isinstance(key, str):
        raise InvalidInput(f"object key must be a string, got {type(key).__name__}", field="key")
    if prefix and key == "":
        return key
    body = key[:-1] if prefix and key.endswith("/") else key
    problem = None
    if not body:
        problem = "is empty"
    elif body.startswith("/"):
        problem = "is absolute"
    elif "\\" in body:
        problem = "contains a backslash"
    elif _CONTROL.search(body):
        problem = "contains a control character"
    elif len(key.encode("utf-8")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_KEY_BYTES} bytes"
    else:
        parts = body.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "has an empty, '.' or '..' segment"
    if problem:
        raise InvalidInput(f"object key {key!r} {problem}", field="key")
    return key


# Newest-first index entries: a listing in key order (the only order S3 lists in) reads the newest first, and a
# page after a given entry is one ``list(start_after=...)``, never a read of everything.
_INVERTED_MS = 10**13


def newest_first(created_at: datetime, name: str) -> str:
    """``<inverted milliseconds:013d>-<name>``: later times sort first; ties by name."""
    return f"{_INVERTED_MS - int(created_at.timestamp() * 1000):013d}-{name}"


def named_by(index_key: str) -> str:
    """The name a :func:`newest_first` entry (or a key ending in one) was made for."""
    return index_key.rsplit("/", 1)[-1].split("-", 1)[1]
