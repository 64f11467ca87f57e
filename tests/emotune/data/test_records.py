"""The internal dataset record: JSONL round trip, stable ids, bad lines reported with line and field."""

from __future__ import annotations

import json

import pytest

from emotune.data.records import Message, Provenance, Record, dumps_records, parse_records, record_id
from emotune.errors import InvalidInput


def _record(question: str, reply: str, style: str = "温柔") -> Record:
    return Record(id=record_id(style, question, "single", 0), style=style,
                  messages=[Message(role="system", content="你是一个温柔体贴的聊天伙伴"),
                            Message(role="user", content=question), Message(role="assistant", content=reply)],
                  provenance=Provenance(teacher="zhipuai", model="glm-4-flash", temperature=0.5,
                                        prompt_version="v1", raw_response=f'"{reply}"', source="daily_zh.txt"),
                  meta={"mode": "single"})


def test_jsonl_round_trip_is_lossless_and_keeps_chinese_readable():
    records = [_record("今天好累啊", "辛苦啦~ 先歇一会儿吧☕️"), _record("失眠了", "我陪你一会儿 🌙\n慢慢呼吸~")]
    text = dumps_records(records)
    assert text.count("\n") == 2 and "今天好累啊" in text
    parsed, report = parse_records(text, "records.jsonl", strict=True)
    assert parsed == records and report.read == 2 and report.errors == []
    assert parsed[1].assistant_text == "我陪你一会儿 🌙\n慢慢呼吸~" and parsed[1].first_user_text == "失眠了"


def test_record_ids_are_stable_and_distinguish_every_part():
    assert record_id("温柔", "今天好累啊", "single", 0) == record_id("温柔", "今天好累啊", "single", 0)
    ids = {record_id("温柔", "今天好累啊", "single", 0), record_id("毒舌", "今天好累啊", "single", 0),
           record_id("温柔", "今天好累啊", "multi", 0), record_id("温柔", "今天好累啊", "single", 1),
           record_id("温柔今天", "好累啊", "single", 0)}
    assert len(ids) == 5
    assert all(len(i) == 20 for i in ids)


def test_bad_lines_are_reported_with_line_and_field_and_good_ones_kept():
    good = _record("今天好累啊", "辛苦啦~").model_dump_json()
    no_messages = json.dumps({"id": "x", "style": "温柔", "messages": []})
    bad_role = json.dumps({"id": "y", "messages": [{"role": "robot", "content": "hi"}]})
    unknown_key = json.dumps({"id": "z", "messages": [{"role": "user", "content": "hi"}], "extra": 1})
    lines = [good, '{"id": "broken"', "", no_messages, bad_role, unknown_key, good]
    text = "".join(line + "\n" for line in lines)
    records, report = parse_records(text, "records.jsonl")
    assert len(records) == 2 and report.read == 2
    assert [(e.line, e.field) for e in report.errors] == [
        (2, None), (4, "messages"), (5, "messages[0].role"), (6, "extra")]
    assert str(report.errors[2]).startswith("records.jsonl:5: messages[0].role: Input should be")
    with pytest.raises(InvalidInput) as exc:
        parse_records(text, "records.jsonl", strict=True)
    assert (exc.value.file, exc.value.line) == ("records.jsonl", 2)
