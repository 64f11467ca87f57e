"""Reading user files: UTF-8, UTF-8 with BOM or GBK are decoded; anything else is refused with what was found.

Line-oriented readers report bad lines with their numbers and keep the good ones unless ``strict``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotune.errors import InvalidInput

ACCEPTED_ENCODINGS = ("utf-8", "utf-8-sig", "gbk", "gb18030")

# Text never holds C0 control bytes other than tab, newline, form feed and carriage return; UTF-16 and binary do.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f]")
_SPACED_HANZI = re.compile(r"[\u4e00-\u9fff] (?=[\u4e00-\u9fff])")
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "hz"}
_BYTE_ORDER_MARKS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                     (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def _guess_encoding(data: bytes) -> str:
    """charset-normalizer's best guess (unreliable on short texts, see decode_bytes)."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    return best.encoding if best else "unknown/binary"


def _reads_as_common_chinese(text: str) -> bool:
    """Whether GB-decoded text looks like Chinese rather than another legacy encoding decoded as GBK.

    Big5, Shift-JIS, Latin-1 and Cyrillic bytes mostly *decode* as GBK too, but into rare characters; real
    Chinese keeps to GB2312 (the 6763 common characters). EUC-KR Hangul is the one encoding that lands inside
    GB2312, and only in its rows 0xB0-0xC8: Korean read as GBK is spaced runs of characters from those rows alone.
    Chinese uses characters from every row (温 is 0xCEC2, 是 0xCAC7, 我 0xCED2), so a text with any character
    outside them, or without spaced runs, reads as Chinese.
    """
    from charset_normalizer.constant import FREQUENCIES

    wide = [ch for ch in text if ord(ch) > 0x7F]
    if not wide:
        return True
    rows = []
    for ch in wide:
        try:
            rows.append(ch.encode("gb2312")[0])
        except UnicodeEncodeError:
            pass
    if len(rows) < 0.9 * len(wide):
        return False
    frequent = set(FREQUENCIES["Chinese"])
    if sum(ch in frequent for ch in wide) >= 0.12 * len(wide):
        return True
    korean_rows = all(0xB0 <= row <= 0xC8 for row in rows)
    return not (korean_rows and len(_SPACED_HANZI.findall(text)) >= 0.1 * len(wide))


def decode_bytes(data: bytes, source: str = "<input>") -> str:
    """Decode a user's text file, by a fixed rule:

    1. a UTF-16/32 byte-order mark or a C0 control byte (UTF-16 without a mark, binary) is refused, with its line;
    2. UTF-8, with or without a BOM (after a UTF-8 BOM nothing else is tried);
    3. else GB18030, strictly, when the bytes decode *and* read as Chinese text: charset-normalizer's best guess
       is a GB encoding, or the text keeps to common Chinese (:func:`_reads_as_common_chinese`, which tells GBK
       from Big5 / Shift-JIS / EUC-KR / Latin-1 bytes that also happen to decode as GB18030);
    4. else a refusal naming the first line that is not UTF-8 and the encoding it looks like.

    Whether GBK is accepted never depends on the detector's list of runner-up candidates (which is unstable on
    files with long runs of one character, CRLF line ends or blank lines, the way Windows tools write them).
    """
    for mark, name in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            raise InvalidInput(f"file is {name} (found a {name} byte-order mark); save it as UTF-8", file=source)
    control = _CONTROL_BYTES.search(data)
    if control:
        line = data[: control.start()].count(b"\n") + 1
        raise InvalidInput(f"file contains the control byte {control.group()!r}: UTF-16 without a byte-order mark, "
                           "or not a text file; save it as UTF-8", file=source, line=line)
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as utf8_error:
        line = body[: utf8_error.start].count(b"\n") + 1
    if body is data:  # a UTF-8 BOM means the rest must be UTF-8
        found = _guess_encoding(data)
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            text = None
        if text is not None and (found in _GB_FAMILY or _reads_as_common_chinese(text)):
            return text
    else:
        found = "UTF-8 BOM followed by bytes that are not UTF-8"
    raise InvalidInput(f"cannot decode as UTF-8 or GBK (looks like {found}); save the file as UTF-8",
                       file=source, line=line)


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput("file not found", file=str(path)) from None
    return decode_bytes(data, str(path))


def field_path(loc: tuple[str | int, ...] | list[str | int]) -> str | None:
    """A pydantic-style location as users read it: ``("styles", 1, "temperature")`` -> ``styles[1].temperature``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None


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
    """Maps a character offset in ``text`` to its 1-based line number. Readers ask for increasing offsets, so
    newlines are counted from the previous answer (in C, no per-line Python work on big corpora)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._offset = 0
        self._line = 1

    def line(self, offset: int) -> int:
        if offset < self._offset:
            self._offset, self._line = 0, 1
        self._line += self._text.count("\n", self._offset, offset)
        self._offset = offset
        return self._line


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
