"""Record <-> XTuner / alpaca / sharegpt / OpenAI JSONL round trips, lossy cases, import errors, LLaMA-Factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotune.data.formats import (
    DATASET_FORMATS,
    SHAREGPT,
    SHAREGPT_ROLE_CONTENT,
    ShareGPTTags,
    dumps_dataset,
    llamafactory_dataset_info,
    parse_dataset,
    to_alpaca,
    to_format,
    to_xtuner,
)
from emotune.data.records import Message, Provenance, Record
from emotune.data.textio import read_text
from emotune.errors import InvalidInput

DATA = Path(__file__).parents[2] / "data" / "datasets"
FOREIGN = [f for f in DATASET_FORMATS if f != "emotune"]


def _record(id: str, style: str | None, *turns: tuple[str, str]) -> Record:
    return Record(id=id, style=style, messages=[Message(role=r, content=c) for r, c in turns],
                  provenance=Provenance(teacher="zhipuai", model="glm-4", temperature=0.7, source="daily_zh.txt"),
                  meta={"variant": 0})


RECORDS = [
    _record("single", "温柔", ("system", "你是一个温柔体贴的聊天伙伴"), ("user", "今天好累啊"),
            ("assistant", "辛苦啦~ 先歇一会儿吧☕️")),
    _record("multi", "傲娇", ("user", "下雨了，我没带伞..."), ("assistant", "哼！笨蛋！😒\n……地址发我。"),
            ("user", "谢谢"), ("assistant", "谁、谁要你谢了😳")),
    _record("no-style", None, ("user", "周末去哪玩？"), ("assistant", "宅着呗... \"晒太阳\"~")),
]


def _messages(records: list[Record]) -> list[list[tuple[str, str]]]:
    return [[(m.role, m.content) for m in r.messages] for r in records]


@pytest.mark.parametrize("fmt", FOREIGN)
@pytest.mark.parametrize("jsonl", [False, True])
def test_round_trip_keeps_messages_and_with_meta_style_and_id(fmt, jsonl):
    text = dumps_dataset(RECORDS, fmt, meta=True, jsonl=jsonl)
    assert text.lstrip().startswith("{" if jsonl else "[")
    records, report = parse_dataset(text, fmt, source=f"out.{fmt}", strict=True)
    assert report.errors == [] and report.read == len(RECORDS)
    assert _messages(records) == _messages(RECORDS)
    assert [(r.id, r.style) for r in records] == [(r.id, r.style) for r in RECORDS]


@pytest.mark.parametrize("fmt", FOREIGN)
def test_without_meta_the_style_is_supplied_on_import_and_ids_are_stable(fmt):
    text = dumps_dataset(RECORDS[:2], fmt)
    assert "温柔" not in text.replace("温柔体贴", "")  # the style name itself is not in the file
    first, _ = parse_dataset(text, fmt, style="温柔")
    again, _ = parse_dataset(text, fmt, style="温柔")
    assert _messages(first) == _messages(RECORDS[:2])
    assert {r.style for r in first} == {"温柔"}
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == 2
    assert {r.provenance.teacher for r in first} == {"import"}


def test_emotune_format_is_lossless():
    records, _ = parse_dataset(dumps_dataset(RECORDS, "emotune"), "emotune", strict=True)
    assert records == RECORDS


def test_xtuner_keeps_a_system_prompt_on_the_turn_it_precedes():
    record = _record("sys2", "毒舌", ("system", "第一段设定"), ("user", "又胖了5斤！"), ("assistant", "好家伙！"),
                     ("system", "换个话题"), ("user", "熬夜了"), ("assistant", "啧啧"))
    item = to_xtuner(record)
    assert item == {"conversation": [
        {"system": "第一段设定", "input": "又胖了5斤！", "output": "好家伙！"},
        {"system": "换个话题", "input": "熬夜了", "output": "啧啧"}]}
    back, _ = parse_dataset(json.dumps([item], ensure_ascii=False), "xtuner", strict=True)
    assert _messages(back) == _messages([record])
    with pytest.raises(InvalidInput, match="one system prompt") as exc:
        to_alpaca(record)
    assert exc.value.field == "messages"


def test_sharegpt_layouts_and_custom_tags():
    record = RECORDS[0]
    assert to_format(record, "sharegpt") == {"conversations": [
        {"from": "system", "value": "你是一个温柔体贴的聊天伙伴"}, {"from": "human", "value": "今天好累啊"},
        {"from": "gpt", "value": "辛苦啦~ 先歇一会儿吧☕️"}]}
    assert to_format(record, "sharegpt", tags=SHAREGPT_ROLE_CONTENT)["conversations"][1] == {
        "role": "user", "content": "今天好累啊"}
    tags = ShareGPTTags(messages_key="dialog", role_tag="speaker", content_tag="text", user_tag="Q",
                        assistant_tag="A", system_tag="S")
    text = dumps_dataset(RECORDS, "sharegpt", tags=tags)
    assert '"speaker": "Q"' in text
    back, _ = parse_dataset(text, "sharegpt", tags=tags, strict=True)
    assert _messages(back) == _messages(RECORDS)


def test_alpaca_puts_earlier_turns_in_history_and_merges_instruction_with_input():
    item = to_alpaca(RECORDS[1])
    assert item == {"instruction": "谢谢", "input": "", "output": "谁、谁要你谢了😳", "system": "",
                    "history": [["下雨了，我没带伞...", "哼！笨蛋！😒\n……地址发我。"]]}
    records, report = parse_dataset(read_text(DATA / "alpaca_history.json"), "alpaca", source="alpaca_history.json",
                                    style="傲娇")
    assert _messages(records)[1] == [
        ("system", "你是一个口是心非、外冷内热的聊天助手。"),
        ("user", "闺蜜把我秘密当谈资，该不该撕破脸？"), ("assistant", "哼！当然不能忍啊！😒"),
        ("user", "那我该怎么开口？\n她是我大学室友"),  # instruction + "\n" + input: the split is lost
        ("assistant", "哼，这都要我教……就说'那件事我只跟你说过'，看她反应😒")]
    [error] = report.errors
    assert (error.line, error.field) == (19, "history[0]")  # the line the item starts on
    assert "[user, assistant] pair" in error.message


def test_seed_002_xtuner_output_uses_its_style_name_and_reports_the_empty_reply():
    records, report = parse_dataset(read_text(DATA / "tianji_wishes_xtuner.json"), "xtuner",
                                    source="tianji_wishes_xtuner.json")
    assert [r.style for r in records] == ["小红书", "严肃", "正常"]
    assert _messages(records)[0] == [
        ("system", "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"),
        ("user", "祝姐姐生日,小红书风格"), ("assistant", "愿你眼里有光、心中有爱，岁岁常欢愉，年年皆胜意🎂✨")]
    [error] = report.errors
    assert str(error) == "tianji_wishes_xtuner.json:24: conversation[0].output: is empty"
    assert report.read == 3


def test_wechat_sharegpt_variant_reads_with_role_content_tags():
    records, _ = parse_dataset(read_text(DATA / "wechat_sharegpt.json"), "sharegpt", tags=SHAREGPT_ROLE_CONTENT,
                               style="我的微信", strict=True)
    assert _messages(records) == [[("system", "你是小李，一个聪明、热情、善良的人"), ("user", "晚上吃啥"),
                                   ("assistant", "火锅走起"), ("user", "几点"), ("assistant", "七点老地方")]]
    # The same file read with the default from/value tags names the first message's missing role.
    _, report = parse_dataset(read_text(DATA / "wechat_sharegpt.json"), "sharegpt", source="w.json")
    assert report.errors[0].field == "conversations[0].from"


def test_openai_jsonl_content_parts_broken_lines_and_tool_roles():
    text = read_text(DATA / "openai_chat.jsonl")
    records, report = parse_dataset(text, "openai", source="openai_chat.jsonl", style="温柔")
    assert _messages(records) == [
        [("system", "你是一个温柔体贴的聊天伙伴"), ("user", "今天好累啊"), ("assistant", "辛苦啦~ 先歇一会儿吧☕️")],
        [("user", "周末去哪玩"), ("assistant", "宅着呗... 晒太阳~")],
        [("user", "又胖了5斤！"), ("assistant", "好家伙！🏋️")]]
    assert [(e.line, e.field) for e in report.errors] == [(3, None), (4, "messages[1].role")]
    assert "broken JSON" in report.errors[0].message and "tool" in report.errors[1].message
    with pytest.raises(InvalidInput) as exc:
        parse_dataset(text, "openai", source="openai_chat.jsonl", strict=True)
    assert (exc.value.file, exc.value.line) == ("openai_chat.jsonl", 3)
    assert str(exc.value).startswith("openai_chat.jsonl:3: broken JSON")


@pytest.mark.parametrize("fmt", ["xtuner", "alpaca", "sharegpt"])
@pytest.mark.parametrize(("turns", "field", "reason"), [
    ([("user", "a"), ("user", "b"), ("assistant", "c")], "messages[1].role", "two user messages"),
    ([("user", "a")], "messages", "end with an assistant reply"),
    ([("assistant", "a"), ("user", "b"), ("assistant", "c")], "messages[0].role", "must answer a user"),
])
def test_records_that_do_not_fit_turns_are_refused_with_the_message_index(fmt, turns, field, reason):
    with pytest.raises(InvalidInput, match=reason) as exc:
        to_format(_record("bad", "温柔", *turns), fmt)
    assert exc.value.field == field
    assert exc.value.details["record"] == "bad"


def test_openai_keeps_any_role_order():
    record = _record("q", None, ("user", "a"), ("user", "b"))
    assert to_format(record, "openai") == {"messages": [{"role": "user", "content": "a"},
                                                        {"role": "user", "content": "b"}]}


def test_llamafactory_dataset_info_entries():
    assert llamafactory_dataset_info("emotune_alpaca", "train.json", "alpaca") == {"emotune_alpaca": {
        "file_name": "train.json", "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                    "history": "history"}}}
    assert llamafactory_dataset_info("wechat", "small_train.json", "sharegpt", SHAREGPT_ROLE_CONTENT) == {"wechat": {
        "file_name": "small_train.json", "formatting": "sharegpt", "columns": {"messages": "conversations"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}
    openai = llamafactory_dataset_info("chat", "chat.jsonl", "openai")["chat"]
    assert openai["columns"] == {"messages": "messages"} and openai["tags"]["role_tag"] == "role"
    assert llamafactory_dataset_info("d", "d.json", "sharegpt")["d"]["tags"]["user_tag"] == SHAREGPT.user_tag
    with pytest.raises(InvalidInput, match="cannot read the 'xtuner' layout"):
        llamafactory_dataset_info("x", "x.json", "xtuner")


def test_unknown_format_is_refused():
    with pytest.raises(InvalidInput, match="unknown dataset format 'csv'"):
        parse_dataset("[]", "csv")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown dataset format"):
        dumps_dataset(RECORDS, "csv")  # type: ignore[arg-type]
