"""Importing big corpora in bounded memory: JSON read item by item through a window, JSON Lines and text line by
line, the encoding checked as the bytes go by, and at most EMOTUNE_IMPORT_MAX_QUESTIONS questions kept.

Streamed reading must say exactly what reading the whole text says (items, lines, errors), whatever the block size
a window reads: the same documents are read both ways here with blocks down to one character.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emotune.data import textio
from emotune.data.importers import import_questions, parse_questions
from emotune.data.textio import (
    ReadReport,
    TextWindow,
    decode_bytes,
    iter_json_array,
    iter_json_items,
    iter_jsonl,
    open_text,
)
from emotune.errors import InvalidInput

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples" / "questions"
DATA = ROOT / "tests" / "data" / "questions"

ARRAYS = [
    '[\n  {"a": 1},\n  {"a":\n    2},\n  3\n]\n',
    '[{"a": 1},\n {"a": oops},\n {"a": 3}]',
    "[1]\n\ngarbage",
    '  \n\n [ "一 二", ["三", "四 五"], {"k": "a \\" ] , [ still a string"} ,\n\n 7 8 ]',
    "[]",
    "[1,]",
    '["unterminated',
    "{}",
    "",
]
LINES = [
    '\n\n{"q": "早"}\n\n{"q": 1\n{"q": "晚"}\n   \n["x"]',
    '\ufeff{"q": "带 BOM"}\r\n{"q": "CRLF"}\r\n',
    '{"q": "没有换行结尾"}',
]


def _read(reader, text, block: int | None):
    report = ReadReport("f.json")
    source = text if block is None or not isinstance(text, str) else TextWindow(io.StringIO(text), "f.json", block)
    items = list(reader(source, report))
    return items, [(e.line, e.message, e.field) for e in report.errors], report.read


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_streamed_json_reading_says_what_whole_text_reading_says(block):
    for text in ARRAYS:
        assert _read(iter_json_array, text, block) == _read(iter_json_array, text, None), text
        assert _read(iter_json_items, text, block) == _read(iter_json_items, text, None), text
    for text in LINES:
        assert _read(iter_jsonl, text, block) == _read(iter_jsonl, text, None), text
        assert _read(iter_json_items, text, block) == _read(iter_json_items, text, None), text
    # the reference answers themselves (lines where items start, where syntax breaks)
    assert _read(iter_json_array, ARRAYS[1], block)[1] == [
        (2, "broken JSON: Expecting value (column 8); the rest of the file is skipped", None)]
    assert _read(iter_json_array, ARRAYS[3], block)[0][:2] == [(3, "一 二"), (3, ["三", "四 五"])]
    assert _read(iter_json_array, ARRAYS[3], block)[1] == [
        (5, "broken JSON: expected ',' or ']' between array items; the rest of the file is skipped", None)]
    assert [line for line, _ in _read(iter_jsonl, LINES[0], block)[0]] == [3, 6, 8]


@pytest.mark.parametrize("block", [1, 5, 64])
def test_streamed_importers_keep_questions_lines_and_fields(block, monkeypatch):
    """Each importer on a stream (blocks of ``block`` characters) gives what it gives on the whole text."""
    monkeypatch.setattr(textio, "_BLOCK", block)
    cases = [
        (DATA / "lccc_splits.json", "lccc", None),
        (EXAMPLES / "lccc_sample.json", "lccc", None),
        (DATA / "lccc_toy_train.txt", "lccc", None),
        (DATA / "nested.json", "json", "data.items.*.q"),
        (DATA / "nested.json", "json", "data.items.1.q"),
        (DATA / "nested.json", "json", "meta.source"),
        (DATA / "nested.json", "json", "meta.version"),
        (DATA / "nested.json", "json", "data.items.9.q"),
        (DATA / "nested.json", "json", "data.q"),
        (EXAMPLES / "daily_zh.txt", "lines", None),
    ]
    for path, format, field_path in cases:
        text = decode_bytes(path.read_bytes(), path.name)
        whole = parse_questions(text, format, source=path.name, field_path=field_path)
        streamed = parse_questions(io.StringIO(text), format, source=path.name, field_path=field_path)
        assert streamed.questions == whole.questions, (path, field_path)
        assert streamed.dialogues == whole.dialogues
        assert [str(e) for e in streamed.report.errors] == [str(e) for e in whole.report.errors]
        assert streamed.report.read == whole.report.read
    nested = parse_questions(io.StringIO((DATA / "nested.json").read_text()), "json", field_path="data.items.*.q")
    assert [(e.line, e.field, e.message) for e in nested.report.errors] == [(16, "data.items[2].q", "field missing")]
    missing = parse_questions(io.StringIO('{"data": {"items": 3}}'), "json", field_path="data.items.*.q")
    assert [e.message for e in missing.report.errors] == ["found int where the path expects an object"]
    broken = parse_questions(io.StringIO('{"train": [["早 上 好", "好"],\n ["晚 安" oops]]}'), "lccc")
    assert broken.questions == ["早上好"]
    assert [(e.line, e.message) for e in broken.report.errors] == [
        (2, "broken JSON: Expecting ',' delimiter (column 9)")]


def test_big_files_are_checked_as_they_are_read_with_decode_bytes_answers(tmp_path, monkeypatch):
    """Above WHOLE_FILE_BYTES a file is never read whole: the encoding rule is applied block by block and the
    refusals name the same lines as decoding the whole file."""
    monkeypatch.setattr(textio, "WHOLE_FILE_BYTES", 64)
    monkeypatch.setattr(textio, "_BLOCK", 16)
    lines = [json.dumps({"q": f"第{i}个问题，今天好累啊"}, ensure_ascii=False) for i in range(40)]
    cases = {
        "utf8.jsonl": "\n".join(lines).encode("utf-8"),
        "bom.jsonl": b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"),
        "gbk.jsonl": "\r\n".join(lines).encode("gbk"),
        "corrupt.jsonl": "\n".join(lines).encode("utf-8").replace("第30个".encode(), b"\xff30"),
        "bom-then-gbk.jsonl": b"\xef\xbb\xbf" + "\n".join(lines).encode("gbk"),
        "control.jsonl": "\n".join(lines).encode("utf-8").replace(b"\n", b"\n\x01", 1)[:-1] + b"\x02",
        "utf16.jsonl": "\n".join(lines).encode("utf-16"),
        "cut.jsonl": "\n".join(lines).encode("utf-8") + "好".encode()[:2],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            expected = _read(iter_jsonl, decode_bytes(data, str(path)), None)
        except InvalidInput as whole:
            with pytest.raises(InvalidInput) as streamed, open_text(path) as text:
                list(iter_jsonl(text, ReadReport(str(path))))
            # same refusal and line; what a refused encoding "looks like" is guessed from samples of a big file
            assert streamed.value.line == whole.line, name
            assert streamed.value.message.split(" (looks like")[0] == whole.message.split(" (looks like")[0], name
            continue
        with open_text(path) as text:
            assert not isinstance(text, str)
            assert _read(iter_jsonl, text, None) == expected, name
    with pytest.raises(InvalidInput, match="file not found"), open_text(tmp_path / "missing.json"):
        pass


def test_an_import_keeps_at_most_max_questions_and_lowers_a_bigger_limit():
    result = import_questions(EXAMPLES / "lccc_sample.json", max_questions=3)
    assert len(result.questions) == 3 and len(result.dialogues) == 3 and result.capped
    lowered = import_questions(EXAMPLES / "lccc_sample.json", limit=10, max_questions=3)
    assert len(lowered.questions) == 3 and lowered.capped
    own_limit = import_questions(EXAMPLES / "lccc_sample.json", limit=3, max_questions=5)
    assert len(own_limit.questions) == 3 and not own_limit.capped
    everything = import_questions(EXAMPLES / "lccc_sample.json")
    assert len(everything.questions) == 17 and not everything.capped


# ----------------------------------------------------------------------------------------- memory bound

_CHARS = "的一是在不了有和人这中大为上个我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学"


def write_lccc(path: Path, dialogues: int, openings: int, seed: int = 0) -> None:
    """An LCCC-shaped corpus: a JSON list of word-segmented dialogues of 2-3 utterances; the opening utterances
    cycle through ``openings`` distinct ones."""
    rnd = random.Random(seed)

    def utterance() -> str:
        return " ".join(rnd.choice(_CHARS) for _ in range(rnd.randint(3, 8)))

    unique: dict[str, None] = {}
    while len(unique) < openings:
        unique[utterance()] = None
    firsts = list(unique)
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for i in range(dialogues):
            turns = [firsts[i % openings]] + [utterance() for _ in range(rnd.choice((1, 1, 2)))]
            out.write(("," if i else "") + "\n" + json.dumps(turns, ensure_ascii=False))
        out.write("\n]\n")


@pytest.mark.slow
def test_importing_a_35_mb_lccc_file_reads_all_of_it_in_under_200_mb(tmp_path):
    """600k dialogues (35 MB): the whole file is read (its openings repeat, so the question cap is not reached)
    while the peak memory of the importing process stays under 200 MB; json.load alone of the same file takes
    ~250 MB, and the importer took 1.2 GB before it streamed (benchmarks/import_memory.py)."""
    corpus = tmp_path / "lccc.json"
    write_lccc(corpus, 600_000, 20_000)
    assert 30e6 < corpus.stat().st_size < 40e6
    child = textwrap.dedent(f"""
        import json
        from emotune.data.importers import import_questions
        result = import_questions({str(corpus)!r})
        # VmHWM, not ru_maxrss: Linux's ru_maxrss also counts the parent's memory the child had at fork (pytest's)
        peak_kb = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
        print(json.dumps({{"read": result.report.read, "questions": len(result.questions),
                          "dialogues": len(result.dialogues), "errors": len(result.report.errors),
                          "peak_kb": peak_kb}}))
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["read"] == 600_000 and measured["errors"] == 0
    assert measured["questions"] == 20_000 and measured["dialogues"] == 50_000  # the default cap
    assert measured["peak_kb"] < 200 * 1024, f"peak {measured['peak_kb'] / 1024:.0f} MB"
    print(f"peak {measured['peak_kb'] / 1024:.0f} MB in {time.monotonic() - started:.1f} s")
