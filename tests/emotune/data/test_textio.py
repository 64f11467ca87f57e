"""Decoding users' text files by a fixed rule (emotune.data.textio.decode_bytes), checked as a property over generated
Chinese texts the way Windows tools write them: every GBK / GB18030 encoding of common Chinese decodes back to
itself, whatever the line ends, blank lines, line lengths or runs of one character; UTF-16 and binary are still
refused, naming what they are."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from emotune.data.textio import decode_bytes
from emotune.errors import InvalidInput


def _gb2312_hanzi() -> list[str]:
    """The 3755 level-1 characters of GB2312 (rows 16-55): the common Chinese people write."""
    out = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                out.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return out


COMMON = _gb2312_hanzi()
PUNCTUATION = list("，。！？、；：“”（）…—0123456789abcXYZ ")
hanzi = st.sampled_from(COMMON)
ordinary_line = st.text(alphabet=st.sampled_from(COMMON + PUNCTUATION), min_size=1, max_size=80)
one_char_run = st.builds(lambda ch, n: ch * n, hanzi, st.integers(1, 10_000))
long_line = st.text(alphabet=hanzi, min_size=1000, max_size=10_000)
line = st.one_of(ordinary_line, ordinary_line, one_char_run, long_line, st.just(""))


@st.composite
def chinese_files(draw) -> str:
    lines = draw(st.lists(line, min_size=1, max_size=12))
    if not any(lines):
        lines.append(draw(ordinary_line))
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


def _also_another_text(data: bytes) -> bool:
    """Bytes that are just as validly UTF-8, or Korean (EUC-KR Hangul), as they are GBK: only a few characters
    long in practice (e.g. 一 is b"\\xd2\\xbb", also UTF-8 for Cyrillic һ); the rule reads those as UTF-8 / refuses
    them, which the docstring of decode_bytes states."""
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        pass
    try:
        return any("\uac00" <= ch <= "\ud7a3" for ch in data.decode("euc-kr"))
    except UnicodeDecodeError:
        return False


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(text=chinese_files(), encoding=st.sampled_from(["gbk", "gb18030"]))
def test_every_gbk_or_gb18030_chinese_file_decodes_to_itself(text, encoding):
    data = text.encode(encoding)
    assume(not _also_another_text(data))
    assert decode_bytes(data, "questions.txt") == text


def test_the_reported_windows_file_decodes():
    """CRLF line ends, a blank line and one very long line of a repeated character (the issue's example)."""
    text = "今天好累啊\r\n\r\n" + "哈" * 5000 + "\r\n周末去哪玩好呢？\r\n"
    assert decode_bytes(text.encode("gbk"), "q.txt") == text


@settings(max_examples=40, deadline=None, derandomize=True)
@given(text=chinese_files())
def test_utf16_without_a_mark_is_refused_with_its_line(text):
    """(With a line end: a single CJK character in UTF-16 can be two printable ASCII bytes, 倡 = b"!P".)"""
    with pytest.raises(InvalidInput, match="UTF-8") as exc:
        decode_bytes((text + "\n").encode("utf-16-le"), "q.txt")
    assert exc.value.file == "q.txt" and exc.value.line >= 1


def test_binary_and_marked_utf16_are_refused_naming_what_they_are():
    with pytest.raises(InvalidInput, match="UTF-16"):
        decode_bytes("你好".encode("utf-16"), "q.txt")
    with pytest.raises(InvalidInput, match="not a text file"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "q.png")
