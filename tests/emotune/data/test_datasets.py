"""Reading a dataset from the store (the trainer's and the validator's one reader): artifact or plain object, every
bad line reported with file, line and field, every valid sample kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotune.data.datasets import check_dataset, decode_dataset, fetch_dataset, load_dataset, read_dataset
from emotune.data.records import Message, Record, dumps_records
from emotune.errors import InvalidInput, NotFound
from emotune.store.artifacts import publish_artifact
from emotune.store.local import LocalStore

RECORDS = [Record(id=f"r{i}", style="温柔", messages=[Message(role="user", content=f"今天好累啊，第{i}天"),
                                                       Message(role="assistant", content=f"辛苦啦，先歇一会儿吧（{i}）")])
           for i in range(6)]


@pytest.fixture
def lines() -> list[str]:
    return dumps_records(RECORDS).splitlines()


def test_an_artifact_or_a_plain_object_is_read_and_a_bad_key_names_its_field(tmp_path: Path):
    store = LocalStore(tmp_path)
    data = dumps_records(RECORDS[:3]).encode()
    publish_artifact(store, "datasets/a", {"records.jsonl": data}, {"kind": "dataset"})
    store.put_bytes("uploads/b.jsonl", data)
    assert check_dataset(store, "datasets/a") and not check_dataset(store, "uploads/b.jsonl")
    assert fetch_dataset(store, "datasets/a") == data == fetch_dataset(store, "uploads/b.jsonl")
    store.put_bytes("uploads/c.jsonl", data + b"{broken\n")
    records, report = load_dataset(store, "uploads/c.jsonl")
    assert len(records) == 3 and str(report.errors[0]).startswith("uploads/c.jsonl:4: broken JSON")
    publish_artifact(store, "datasets/c", {"other.txt": b"x"}, {})
    with pytest.raises(InvalidInput, match="records.jsonl") as refused:
        load_dataset(store, "datasets/c")
    assert refused.value.field == "dataset_artifact"
    with pytest.raises(NotFound) as missing:
        fetch_dataset(store, "datasets/missing", "mix_dataset_artifact")
    assert missing.value.details["field"] == "mix_dataset_artifact"


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


def test_a_whole_gbk_file_is_read():
    records, report = read_dataset(dumps_records(RECORDS).encode("gbk"), "old.jsonl")
    assert [r.id for r in records] == [r.id for r in RECORDS] and not report.errors


def test_a_bom_is_ignored(lines):
    records, report = read_dataset(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"), "bom.jsonl")
    assert len(records) == 6 and not report.errors


def test_utf16_is_refused_naming_the_file(lines):
    with pytest.raises(InvalidInput) as info:
        decode_dataset("\n".join(lines).encode("utf-16"), "phone-export.jsonl")
    assert info.value.file == "phone-export.jsonl" and "UTF-16" in info.value.message


def test_other_formats_are_read_with_a_style():
    openai = "\n".join(json.dumps({"messages": [m.model_dump() for m in r.messages]}, ensure_ascii=False)
                       for r in RECORDS[:3])
    records, report = read_dataset(openai.encode("utf-8"), "chat.jsonl", "openai", style="毒舌")
    assert len(records) == 3 and {r.style for r in records} == {"毒舌"} and not report.errors
