"""Reading user files: UTF-8, UTF-8 with BOM or GBK are decoded; anything else is refused with what was found.

Line-oriented readers report bad lines with their numbers and keep the good ones unless ``strict``.
"""

from __future__ import annotations

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

    def fail(self, line: int, message: str, field: str | None = None, *, strict: bool = False) -> None:
        error = LineError(self.source, line, message, field)
        if strict:
            raise error.to_exception()
        self.errors.append(error)


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
