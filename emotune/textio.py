"""Reading user files: UTF-8, UTF-8 with BOM or GBK are decoded; anything else is refused with what was found.

Line-oriented readers report bad lines with their numbers and keep the good ones unless ``strict``.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotune.errors import InvalidInput

ACCEPTED_ENCODINGS = ("utf-8", "utf-8-sig", "gbk", "gb18030")


def decode_bytes(data: bytes, source: str = "<input>") -> str:
    """Decode UTF-8 (with or without BOM) or GBK/GB18030; refuse other encodings, naming the one detected."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidInput("file is UTF-16 (found a UTF-16 byte-order mark); save it as UTF-8", file=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            from charset_normalizer import from_bytes

            best = from_bytes(data).best()
            found = best.encoding if best else "unknown/binary"
            line = data[: utf8_error.start].count(b"\n") + 1
            raise InvalidInput(
                f"cannot decode as UTF-8 or GBK (looks like {found}); save the file as UTF-8",
                file=source, line=line,
            ) from None


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput("file not found", file=str(path)) from None
    return decode_bytes(data, str(path))


@dataclass
class LineError:
    file: str
    line: int
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_exception(self) -> InvalidInput:
        return InvalidInput(self.message, file=self.file, line=self.line, field=self.field)


@dataclass
class ReadReport:
    """What a tolerant reader kept and what it skipped (with file:line)."""

    source: str
    errors: list[LineError] = field(default_factory=list)
    read: int = 0

    def fail(self, line: int, message: str, field: str | None = None, *, strict: bool = False,
             file: str | None = None) -> None:
        """Record a bad line (in ``file`` when a report spans several files); raise at once when ``strict``."""
        error = LineError(file or self.source, line, message, field)
        if strict:
            raise error.to_exception()
        self.errors.append(error)

    def absorb(self, other: ReadReport) -> None:
        """Add another file's counts and errors (a report over a folder of files)."""
        self.read += other.read
        self.errors.extend(other.errors)


def iter_jsonl(text: str, report: ReadReport, *, strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank JSON line; broken lines go to ``report``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            report.fail(number, f"broken JSON: {exc.msg} (column {exc.colno})", strict=strict)
            continue
        report.read += 1
        yield number, value


class LineIndex:
    """Maps a character offset in ``text`` to its 1-based line number."""

    def __init__(self, text: str) -> None:
        self._starts = [0]
        position = text.find("\n")
        while position != -1:
            self._starts.append(position + 1)
            position = text.find("\n", position + 1)

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def iter_json_array(text: str, report: ReadReport, *, strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, item)`` for each element of a top-level JSON array, with the line it starts on.

    ``json.load`` gives no positions; decoding element by element lets errors say where an item is. A syntax
    error ends the reading (the rest of an array cannot be located reliably) and is reported with its line.
    """
    lines = LineIndex(text)
    decoder = json.JSONDecoder()
    position = _skip_whitespace(text, 0)
    if not text.startswith("[", position):
        report.fail(lines.line(position), "expected a JSON array ('[' ...)", strict=strict)
        return
    position = _skip_whitespace(text, position + 1)
    if text.startswith("]", position):
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            report.fail(exc.lineno, f"broken JSON: {exc.msg} (column {exc.colno}); the rest of the file is skipped",
                        strict=strict)
            return
        report.read += 1
        yield lines.line(position), value
        position = _skip_whitespace(text, end)
        if text.startswith(",", position):
            position = _skip_whitespace(text, position + 1)
        elif text.startswith("]", position):
            trailing = _skip_whitespace(text, position + 1)
            if trailing < len(text):
                report.fail(lines.line(trailing), "unexpected text after the closing ']'", strict=strict)
            return
        else:
            report.fail(lines.line(position), "broken JSON: expected ',' or ']' between array items; "
                        "the rest of the file is skipped", strict=strict)
            return


def iter_json_items(text: str, report: ReadReport, *, strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Items of a dataset file written either as one JSON array or as JSON Lines (told apart by the first
    character), each with its line number."""
    if text[_skip_whitespace(text, 0):].startswith("["):
        return iter_json_array(text, report, strict=strict)
    return iter_jsonl(text, report, strict=strict)
