"""Malformed datasets: each bad line is reported with file, line and field; every valid sample is kept."""

import json

import pytest

from emotune.data.records import dumps_records
from emotune.errors import InvalidInput
from emotune.services.validator.dataset import decode_dataset, read_dataset


@pytest.fixture
def lines(good_records) -> list[str]:
    return dumps_records(good_records[:6]).splitlines()


def test_broken_json_missing_fields_and_a_foreign_line_are_reported(lines):
    record = json.loads(lines[1])
    del record["messages"]
    bad_type = json.loads(lines[2])
    bad_type["messages"][0]["role"] = "narrator"
    data = "\n".join([
        lines[0],
        '{"id": "x", "style": "温柔", "messages": [{"role": "user", "content": "hi"',  # 2: cut in the middle
        json.dumps(record, ensure_ascii=False),  # 3: no messages
        json.dumps(bad_type, ensure_ascii=False),  # 4: unknown role
        lines[3],
    ]).encode("utf-8")
    data += b"\n" + '{"id": "gbk", "style": "温柔", "messages": []}'.encode("gbk")  # 6: GBK in a UTF-8 file
    data += b"\n" + "\n".join(lines[4:]).encode("utf-8")
    records, report = read_dataset(data, "gen/records.jsonl")
    assert [r.id for r in records] == [json.loads(line)["id"] for line in (lines[0], lines[3], *lines[4:])]
    found = {(e.line, e.field) for e in report.errors}
    assert found == {(2, None), (3, "messages"), (4, "messages[0].role"), (6, None)}
    shown = [str(e) for e in report.errors]
    assert shown[0].startswith("gen/records.jsonl:2: broken JSON")
    assert shown[1].startswith("gen/records.jsonl:3: messages: Field required")
    assert "not UTF-8" in shown[3]


def test_a_whole_gbk_file_is_read(good_records):
    roasts = [r for r in good_records if r.style == "毒舌"]  # GBK has no emoji: a Windows export holds none
    records, report = read_dataset(dumps_records(roasts).encode("gbk"), "old.jsonl")
    assert [r.id for r in records] == [r.id for r in roasts] and not report.errors


def test_a_bom_is_ignored(lines):
    records, report = read_dataset(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"), "bom.jsonl")
    assert len(records) == 6 and not report.errors


def test_utf16_is_refused_naming_the_file(lines):
    with pytest.raises(InvalidInput) as info:
        decode_dataset("\n".join(lines).encode("utf-16"), "phone-export.jsonl")
    assert info.value.file == "phone-export.jsonl" and "UTF-16" in info.value.message


def test_other_formats_are_read_with_a_style(good_records):
    openai = "\n".join(json.dumps({"messages": [m.model_dump() for m in r.messages]}, ensure_ascii=False)
                       for r in good_records[:3])
    records, report = read_dataset(openai.encode("utf-8"), "chat.jsonl", "openai", style="温柔")
    assert len(records) == 3 and {r.style for r in records} == {"温柔"} and not report.errors
