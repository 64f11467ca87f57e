"""Reading user files: UTF-8, UTF-8 with BOM or GBK are decoded; anything else is refused with what was found.

Line-oriented readers report bad lines with their numbers and keep the good ones unless ``strict``.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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
    if body is not data:  # a UTF-8 BOM means the rest must be UTF-8
        raise _not_decodable("UTF-8 BOM followed by bytes that are not UTF-8", source, line)
    return _decode_as_chinese(data, source, line)


def _not_decodable(found: str, source: str, line: int) -> InvalidInput:
    return InvalidInput(f"cannot decode as UTF-8 or GBK (looks like {found}); save the file as UTF-8",
                        file=source, line=line)


def _decode_as_chinese(data: bytes, source: str, line: int) -> str:
    """``data`` (not UTF-8 from ``line`` on) as GB18030 when it decodes strictly and reads as Chinese, else the
    refusal naming ``line`` (rule 3 and 4 of :func:`decode_bytes`)."""
    found = _guess_encoding(data)
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and (found in _GB_FAMILY or _reads_as_common_chinese(text)):
        return text
    raise _not_decodable(found, source, line)


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput("file not found", file=str(path)) from None
    return decode_bytes(data, str(path))


# A file up to this size is decoded whole (decode_bytes); a bigger one is checked in one pass and then decoded as it
# is read, so reading it costs a window of text, not the file.
WHOLE_FILE_BYTES = 8 * 1024 * 1024
_BLOCK = 1024 * 1024


@contextmanager
def open_text(path: str | Path) -> Iterator[str | TextIO]:
    """A user's text file decoded by :func:`decode_bytes`' rule: small files as a ``str``, bigger ones as a text
    stream (a :class:`TextWindow` reads either), so a corpus of any size is read in bounded memory.

    A big file is checked in one pass over its bytes, block by block, for rule 1 (control bytes) and rule 2
    (UTF-8); the refusals name the same lines as :func:`decode_bytes`. A big file that is not UTF-8 is judged for
    rule 3 on samples (its first 4 MiB and 4 MiB from its first line that is not UTF-8), then decoded as GB18030
    as it is read; a later byte that is not GB18030 either stops the reading with its line.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInput("file not found", file=str(path)) from None
    with file:
        if size <= WHOLE_FILE_BYTES:
            yield decode_bytes(file.read(), str(path))
            return
        encoding = _stream_encoding(file, str(path))
        file.seek(0)
        with io.TextIOWrapper(file, encoding=encoding, errors="strict", newline=None) as text:
            yield text


def _stream_encoding(file: BinaryIO, source: str) -> str:
    """The codec :func:`decode_bytes` would pick for this big file, found in one pass; its refusals otherwise."""
    head = file.read(4)
    for mark, name in _BYTE_ORDER_MARKS:
        if head.startswith(mark):
            raise InvalidInput(f"file is {name} (found a {name} byte-order mark); save it as UTF-8", file=source)
    bom = head.startswith(b"\xef\xbb\xbf")
    file.seek(3 if bom else 0)
    newlines, carry, not_utf8 = 0, b"", None  # not_utf8: (line, byte offset of that line)
    offset = file.tell()
    while block := file.read(_BLOCK):
        control = _CONTROL_BYTES.search(block)
        if control:
            line = newlines + block[: control.start()].count(b"\n") + 1
            raise InvalidInput(f"file contains the control byte {control.group()!r}: UTF-16 without a byte-order "
                               "mark, or not a text file; save it as UTF-8", file=source, line=line)
        if not_utf8 is None:
            data = carry + block
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data":  # a character cut by the block's end
                    carry = data[exc.start:]
                else:
                    before = data[: exc.start]
                    start = offset - len(carry) + before.rfind(b"\n") + 1
                    not_utf8 = (newlines + before.count(b"\n") + 1, start)
        newlines += block.count(b"\n")
        offset += len(block)
    if not_utf8 is None and carry:
        not_utf8 = (newlines + 1, offset - len(carry))
    if not_utf8 is None:
        return "utf-8-sig" if bom else "utf-8"
    line, start = not_utf8
    if bom:
        raise _not_decodable("UTF-8 BOM followed by bytes that are not UTF-8", source, line)
    file.seek(0)
    decoder = codecs.getincrementaldecoder("gb18030")("strict")
    try:
        while block := file.read(_BLOCK):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        gb18030 = False
    else:
        gb18030 = True
    # Rule 3 judged on samples: the first 4 MiB and 4 MiB from the first line that is not UTF-8.
    half = WHOLE_FILE_BYTES // 2
    file.seek(0)
    head = file.read(min(half, start))
    file.seek(start)
    tail = file.read(half)
    if file.read(1):
        tail = tail[: tail.rfind(b"\n") + 1] or tail
    sample = head[: head.rfind(b"\n") + 1] + tail
    if not gb18030:
        raise _not_decodable(_guess_encoding(sample), source, line)
    _decode_as_chinese(sample, source, line)
    return "gb18030"


class TextWindow:
    """A text read front to back through a bounded window, with line numbers: what has been read is dropped.

    Built on a ``str`` (read in place) or a text stream (read 1 MiB at a time). JSON values are decoded one at a
    time where they start, so an array of millions of items costs one item and a block of text, and errors name
    the line (and column) in the file. (An event parser such as ijson streams too, but reports no positions: the
    errors would lose their lines.)
    """

    def __init__(self, source: str | TextIO, source_name: str = "<input>", block: int | None = None) -> None:
        self._stream = None if isinstance(source, str) else source
        self.buf = source if isinstance(source, str) else ""
        self.pos = 0
        self.source_name, self._block = source_name, block or _BLOCK
        self._base_line, self._base_column = 1, 0  # line and column (0-based) of buf[0]
        self._counted, self._counted_line = 0, 1  # line of buf[_counted], counted incrementally

    @property
    def eof(self) -> bool:
        return self._stream is None

    def _fill(self) -> bool:
        """Read one more block (dropping what has been read); False at the end of the text."""
        if self._stream is None:
            return False
        try:
            block = self._stream.read(self._block)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"cannot decode the rest of the file ({exc.reason}); save the file as UTF-8",
                               file=self.source_name, line=self.line()) from None
        if not block:
            self._stream = None
            return False
        if self.pos:
            self._base_line = self.line(self.pos)
            newline = self.buf.rfind("\n", 0, self.pos)
            self._base_column = self.pos - newline - 1 if newline >= 0 else self._base_column + self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
            self._counted, self._counted_line = 0, self._base_line
        self.buf += block
        return True

    def line(self, position: int | None = None) -> int:
        """1-based line of ``buf[position]`` (default: the reading position); positions mostly increase."""
        position = self.pos if position is None else position
        if position < self._counted:
            self._counted, self._counted_line = 0, self._base_line
        self._counted_line += self.buf.count("\n", self._counted, position)
        self._counted = position
        return self._counted_line

    def column(self, position: int) -> int:
        newline = self.buf.rfind("\n", 0, position)
        return position - newline if newline >= 0 else self._base_column + position + 1

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def take(self, char: str) -> bool:
        """Consume ``char`` if it is the next non-whitespace character."""
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def value(self) -> Any:
        """Decode the JSON value at the reading position (reading more text while it is cut off)."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                cut_off = exc.pos >= len(self.buf) - 8 or exc.msg.startswith("Unterminated string")
                if cut_off and self._fill():
                    continue
                raise JSONSyntaxError(exc.msg, self.line(exc.pos), self.column(exc.pos)) from None
            self.pos = end
            return value

    def elements(self) -> Iterator[int]:
        """At a ``[``: yields each element's index with the reading position on it; the caller consumes the
        element (:meth:`value`, :meth:`skip`, or deeper) before asking for the next."""
        self.take("[")
        if self.take("]"):
            return
        index = 0
        while True:
            self.peek()
            yield index
            index += 1
            if self.take(","):
                continue
            if self.take("]"):
                return
            raise JSONSyntaxError("expected ',' or ']' between array items", self.line(), None)

    def members(self) -> Iterator[str]:
        """At a ``{``: yields each key with the reading position on its value, which the caller consumes."""
        self.take("{")
        if self.take("}"):
            return
        while True:
            if self.peek() != '"':
                raise JSONSyntaxError("Expecting property name enclosed in double quotes", self.line(),
                                      self.column(self.pos))
            key = self.value()
            if not self.take(":"):
                raise JSONSyntaxError("Expecting ':' delimiter", self.line(), self.column(self.pos))
            self.peek()
            yield key
            if self.take(","):
                continue
            if self.take("}"):
                return
            raise JSONSyntaxError("expected ',' or '}' between object members", self.line(), None)

    def skip(self) -> None:
        """Consume the value at the reading position without building it (a huge sibling costs nothing)."""
        start = self.peek()
        if start == "[":
            for _ in self.elements():
                self.skip()
        elif start == "{":
            for _ in self.members():
                self.skip()
        else:
            self.value()

    def lines(self) -> Iterator[str]:
        """The remaining lines (without their line ends)."""
        if self._stream is None:
            rest, self.pos = self.buf[self.pos:], len(self.buf)
            yield from rest.splitlines()
            return
        while True:
            newline = self.buf.find("\n", self.pos)
            if newline < 0:
                if self._fill():
                    continue
                if self.pos < len(self.buf):
                    last, self.pos = self.buf[self.pos:], len(self.buf)
                    yield last
                return
            line, self.pos = self.buf[self.pos:newline], newline + 1
            yield line


class JSONSyntaxError(ValueError):
    """Broken JSON at ``line`` (and ``column`` when the decoder names one) of the file."""

    def __init__(self, message: str, line: int, column: int | None) -> None:
        self.msg, self.line, self.column = message, line, column
        super().__init__(self.describe())

    def describe(self) -> str:
        return f"broken JSON: {self.msg} (column {self.column})" if self.column else f"broken JSON: {self.msg}"


_DECODER = json.JSONDecoder()


def field_path(loc: tuple[str | int, ...] | list[str | int]) -> str | None:
    """A pydantic-style location as users read it: ``("styles", 1, "temperature")`` -> ``styles[1].temperature``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None


class ItemError(ValueError):
    """A problem inside one item of an input file (a dataset record, a conversation, a CSV row); ``field`` is
    its path inside the item, e.g. ``conversation[1].output``. Readers turn it into a :class:`LineError`."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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


def _window(text: str | TextIO | TextWindow, report: ReadReport) -> TextWindow:
    return text if isinstance(text, TextWindow) else TextWindow(text, report.source)


def iter_jsonl(text: str | TextIO | TextWindow, report: ReadReport, *,
               strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank JSON line; broken lines go to ``report``. A stream is
    read line by line."""
    window = _window(text, report)
    window.peek()
    for number, line in enumerate(window.lines(), start=window.line()):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            report.fail(number, f"broken JSON: {exc.msg} (column {exc.colno})", strict=strict)
            continue
        report.read += 1
        yield number, value


def iter_json_array(text: str | TextIO | TextWindow, report: ReadReport, *,
                    strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, item)`` for each element of a top-level JSON array, with the line it starts on.

    ``json.load`` gives no positions (and holds the whole document); decoding element by element through a
    :class:`TextWindow` lets errors say where an item is and keeps one item in memory. A syntax error ends the
    reading (the rest of an array cannot be located reliably) and is reported with its line.
    """
    window = _window(text, report)
    if window.peek() != "[":
        report.fail(window.line(), "expected a JSON array ('[' ...)", strict=strict)
        return
    try:
        for _ in window.elements():
            line = window.line()
            value = window.value()
            report.read += 1
            yield line, value
    except JSONSyntaxError as exc:
        report.fail(exc.line, f"{exc.describe()}; the rest of the file is skipped", strict=strict)
        return
    if window.peek():
        report.fail(window.line(), "unexpected text after the closing ']'", strict=strict)


def iter_json_items(text: str | TextIO | TextWindow, report: ReadReport, *,
                    strict: bool = False) -> Iterator[tuple[int, Any]]:
    """Items of a dataset file written either as one JSON array or as JSON Lines (told apart by the first
    character), each with its line number."""
    window = _window(text, report)
    if window.peek() == "[":
        return iter_json_array(window, report, strict=strict)
    return iter_jsonl(window, report, strict=strict)
