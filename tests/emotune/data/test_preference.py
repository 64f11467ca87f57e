"""OpenAI preference JSONL: the checker's errors name line and field; pairs become records; pair exports."""

from __future__ import annotations

import json

import pytest

from emotune.data.preference import (
    check_preference_jsonl,
    dumps_pairs,
    llamafactory_ranking_info,
    looks_like_preference,
    parse_preference_jsonl,
)
from emotune.data.records import Message, Record, dumps_records, parse_records
from emotune.errors import InvalidInput
from emotune.store.files import FileService
from emotune.store.local import LocalStore


def line(messages=None, chosen="哼，自己想办法。", rejected="这里有三点建议。", **override) -> str:
    item = {"input": {"messages": messages or [{"role": "user", "content": "今天好累啊"}]},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}], **override}
    return json.dumps(item, ensure_ascii=False)


def test_every_bad_line_is_reported_with_its_line_and_field():
    text = "\n".join([
        line(),
        line(messages=[{"role": "user", "content": "  "}]),
        line(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]),
        line(chosen="same", rejected="same"),
        line(preferred_output=[{"role": "user", "content": "x"}]),
        line(non_preferred_output=[]),
        json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]},
                    "preferred_output": [{"role": "assistant", "content": "a"}]}),
        line(input={"messages": [{"role": "tool", "content": "x"}]}),
        line(extra=1),
        "{broken",
        "",
        line(messages=[{"role": "system", "content": "你是毒舌的朋友"}, {"role": "user", "content": "好累"}]),
    ])
    result = check_preference_jsonl(text, "pairs.jsonl")
    found = {(e.line, e.field) for e in result.errors}
    assert result.examples == 2
    assert {(2, "input.messages[0].content"), (3, "input.messages"), (4, "non_preferred_output"),
            (5, "preferred_output[0].role"), (6, "non_preferred_output"), (7, "non_preferred_output"),
            (8, "input.messages[0].role"), (9, "extra"), (10, None)} <= found, found
    messages = {e.line: e.message for e in result.errors}
    assert messages[2] == "is empty" and "last input message must be the user's" in messages[3]
    assert "same text" in messages[4] and "Field required" in messages[7]
    assert str(next(e for e in result.errors if e.line == 2)) == "pairs.jsonl:2: input.messages[0].content: is empty"


def test_the_file_service_tells_preference_from_chat_files_and_refuses_bad_ones(tmp_path):
    files = FileService(LocalStore(tmp_path))
    pairs = files.create("pairs.jsonl", "fine-tune", (line() + "\n" + line(chosen="嗯") + "\n").encode())
    assert pairs.emotune["format"] == "preference" and pairs.emotune["examples"] == 2
    chat = files.create("chat.jsonl", "fine-tune", b'{"messages": [{"role": "user", "content": "hi"}, '
                                                   b'{"role": "assistant", "content": "yo"}]}\n')
    assert chat.emotune["format"] == "chat"
    with pytest.raises(InvalidInput) as refused:
        files.create("pairs.jsonl", "fine-tune", (line() + "\n" + line(chosen="") + "\n").encode())
    assert (refused.value.line, refused.value.field) == (2, "preferred_output[0].content")
    assert looks_like_preference(line()) and not looks_like_preference('{"messages": []}')


def test_pairs_become_records_that_round_trip_and_export():
    records = parse_preference_jsonl(line(messages=[{"role": "system", "content": "你是毒舌的朋友"},
                                                    {"role": "user", "content": "好累"}]) + "\n", "p.jsonl",
                                     style="毒舌")
    record = records[0]
    assert record.is_pair and record.style == "毒舌"
    parts = [{"role": "user", "content": [{"type": "text", "text": "好"}, {"type": "text", "text": "累"}]}]
    assert parse_preference_jsonl(line(messages=parts), "p.jsonl")[0].messages[0].content == "好累"  # a chat message
    assert [m.role for m in record.messages] == ["system", "user", "assistant"]
    assert record.messages[-1].content == "哼，自己想办法。" and record.rejected.content == "这里有三点建议。"
    again, report = parse_records(dumps_records(records))
    assert again == records and not report.errors
    # a plain record serialises exactly as before (no "rejected" key)
    plain = Record(id="a", messages=[Message(role="user", content="hi"), Message(role="assistant", content="yo")])
    assert "rejected" not in dumps_records([plain])

    assert json.loads(dumps_pairs(records, "openai")) == json.loads(line(messages=[
        {"role": "system", "content": "你是毒舌的朋友"}, {"role": "user", "content": "好累"}]))
    assert json.loads(dumps_pairs(records, "xtuner")) == {
        "prompt": [{"role": "system", "content": "你是毒舌的朋友"}, {"role": "user", "content": "好累"}],
        "chosen": [{"role": "assistant", "content": "哼，自己想办法。"}],
        "rejected": [{"role": "assistant", "content": "这里有三点建议。"}]}
    assert json.loads(dumps_pairs(records, "llamafactory")) == [{
        "conversations": [{"from": "system", "value": "你是毒舌的朋友"}, {"from": "human", "value": "好累"}],
        "chosen": {"from": "gpt", "value": "哼，自己想办法。"}, "rejected": {"from": "gpt", "value": "这里有三点建议。"}}]
    info = llamafactory_ranking_info("pairs", "pairs.json")["pairs"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"
    with pytest.raises(InvalidInput):
        dumps_pairs([plain], "openai")


def test_a_pair_record_must_end_with_the_chosen_reply():
    with pytest.raises(ValueError, match="end with the chosen"):
        Record(id="a", messages=[Message(role="user", content="hi")],
               rejected=Message(role="assistant", content="no"))
