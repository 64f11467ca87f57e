"""OpenAI chat fine-tuning JSONL: one rule (OpenAIChatLine) for the upload checker and the ``openai`` importer;
every error names line and field."""

from __future__ import annotations

import json

from emotune.data.chat_jsonl import check_chat_jsonl
from emotune.data.formats import parse_dataset


def line(*messages: dict, **extra) -> str:
    return json.dumps({"messages": list(messages), **extra}, ensure_ascii=False)


USER = {"role": "user", "content": "今天好累啊"}
REPLY = {"role": "assistant", "content": "辛苦啦~ 先歇一会儿吧"}

GOOD = [
    line({"role": "system", "content": "你是一个温柔体贴的聊天伙伴"}, USER, {**REPLY, "weight": 1}, style="温柔"),
    line({"role": "user", "content": [{"type": "text", "text": "周末"}, {"type": "text", "text": "去哪玩"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "宅着呗"}], "weight": 0}),
    line({**USER, "name": "小明"}, REPLY),
]
BAD = {  # line -> (field, what the message says)
    "{broken": (None, "broken JSON"),
    "[1, 2]": (None, "an object with a 'messages' list"),
    json.dumps({"prompt": "hi"}): ("messages", "Field required"),
    line(): ("messages", "has no messages"),
    line(USER): ("messages", "no assistant message"),
    line(USER, {"role": "robot", "content": "beep"}): ("messages[1].role", "unknown role 'robot'"),
    line(USER, {"role": "tool", "content": "晴"}, REPLY): ("messages[1].role", "unknown role 'tool'"),
    line({"role": "user", "content": "  "}, REPLY): ("messages[0].content", "is empty"),
    line({"role": "user", "content": 5}, REPLY): ("messages[0].content", "found int"),
    line({"role": "user"}, REPLY): ("messages[0].content", "Field required"),
    line({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, REPLY):
        ("messages[0].content[0].type", "only text parts"),
    line(USER, {**REPLY, "tool_calls": []}): ("messages[1].tool_calls", "Extra inputs"),
    line({**USER, "weight": 1}, REPLY): ("messages[0].weight", "only assistant messages"),
    line(USER, {**REPLY, "weight": 2}): ("messages[1].weight", "0 or 1"),
}


def test_the_checker_reports_every_bad_line_with_its_field_and_counts_the_good_ones():
    text = "\n".join([*GOOD, *BAD])
    result = check_chat_jsonl(text, "chat.jsonl")
    assert (result.examples, result.assistant_turns) == (3, 3)
    errors = {}
    for error in result.errors:  # the first of each line's errors
        errors.setdefault(error.line, error)
    assert sorted(errors) == list(range(len(GOOD) + 1, len(GOOD) + len(BAD) + 1))
    for number, (field, says) in enumerate(BAD.values(), start=len(GOOD) + 1):
        assert (errors[number].field, says in errors[number].message) == (field, True), errors[number]
    assert str(errors[len(GOOD) + 6]).startswith("chat.jsonl:9: messages[1].role: unknown role 'robot'")


def test_the_importer_keeps_and_refuses_the_same_lines_naming_the_same_fields():
    text = "\n".join([*GOOD, *BAD])
    records, report = parse_dataset(text, "openai", source="chat.jsonl")
    checked = check_chat_jsonl(text, "chat.jsonl")
    assert len(records) == checked.examples
    first = {}
    for error in checked.errors:
        first.setdefault(error.line, error.field)
    assert [(e.line, e.field) for e in report.errors] == list(first.items())
    assert [[(m.role, m.content) for m in r.messages] for r in records[1:]] == [
        [("user", "周末去哪玩"), ("assistant", "宅着呗")], [("user", "今天好累啊"), ("assistant", "辛苦啦~ 先歇一会儿吧")]]
    assert records[0].style == "温柔"


def test_an_example_over_the_token_limit_is_refused():
    result = check_chat_jsonl(GOOD[0], "chat.jsonl", max_tokens=10)
    assert not result.examples and result.errors[0].field == "messages" and "over the limit of 10" in \
        result.errors[0].message
