"""Work-item planning: stable ids, dedup, the compatibility filter, natural training inputs, dialogue parsing."""

from __future__ import annotations

import pytest

from emotune.data.records import Message
from emotune.data.styles import parse_styles
from emotune.services.datagen.plan import build_plan, parse_dialogue, parse_opening, with_opening
from emotune.services.datagen.teachers import TeacherError


def _plan(yaml_text, mode, questions=(), dialogues=(), variants=1, seed=0, names=()):
    return build_plan(parse_styles(yaml_text), list(names), mode, questions=list(questions),
                      dialogues=list(dialogues), variants=variants, seed=seed, source="q.txt")


def test_single_turn_items(styles_yaml):
    plan = _plan(styles_yaml, "single", ["今天好累", "今天好累", "下雨了"], variants=2)
    assert plan.total == 2 * 2 * 2 and plan.skipped == {"温柔": {"duplicate": 2}, "毒舌": {"duplicate": 2}}
    item = plan.items[0]
    # the teacher sees system prompt + few-shot turns as real messages, then the question
    assert [m["role"] for m in item.prompt] == ["system", "user", "assistant", "user"]
    assert item.prompt[-1]["content"] == "今天好累" and item.prompt[1]["content"] == "今天好累啊"
    assert [m.role for m in item.context] == ["system", "user"] and item.context[1].content == "今天好累"
    # ids are stable across plannings and distinct per (style, question, mode, variant)
    again = _plan(styles_yaml, "single", ["今天好累", "下雨了"], variants=2)
    assert [i.id for i in again.items] == [i.id for i in plan.items]
    assert len({i.id for i in plan.items}) == plan.total


def test_style_subset(styles_yaml):
    plan = _plan(styles_yaml, "single", ["你好"], names=["毒舌"])
    assert {i.style for i in plan.items} == {"毒舌"}


def test_combinatorial_filter_and_natural_inputs(blessings_yaml):
    plan = _plan(blessings_yaml, "combinatorial", variants=2, seed=7)
    combos = {(i.style, i.meta["recipient"], i.meta["scene"]) for i in plan.items}
    assert ("小红书", "领导", "春节") not in combos and ("严肃", "领导", "春节") in combos
    assert plan.total == (2 * 2 - 2 + 2 * 2) * 2  # 小红书 loses 领导 x 2 scenes
    assert plan.skipped == {"小红书": {"incompatible": 4}}
    for item in plan.items:
        request = item.context[-1].content
        assert item.context[-1].role == "user"
        # the training input is a short natural request, never the generation prompt
        assert request != item.prompt[-1]["content"] and "不要解释" not in request and len(request) < 40
        assert item.meta["scene"] in request
    mom = next(i for i in plan.items if i.meta["recipient"] == "妈妈")
    assert "我妈" in mom.context[-1].content  # the recipient's natural mention
    assert mom.meta["reference"] in mom.prompt[-1]["content"]


def test_combinatorial_randomness_is_seeded(blessings_yaml):
    prompts = lambda seed: [i.prompt[-1]["content"] + i.context[-1].content
                            for i in _plan(blessings_yaml, "combinatorial", variants=3, seed=seed).items]
    assert prompts(1) == prompts(1)
    assert prompts(1) != prompts(2)


def test_multi_turn_from_dialogue_fragments(styles_yaml):
    fragment = [Message(role="user", content="在吗"), Message(role="assistant", content="在")]
    plan = _plan(styles_yaml, "multi", ["ignored when dialogues exist"], dialogues=[fragment])
    assert plan.total == 2 and all(i.expects == "dialogue" for i in plan.items)
    assert '"content": "在吗"' in plan.items[0].prompt[-1]["content"]
    assert "风格示例" in plan.items[0].prompt[0]["content"]  # few-shot folded into the system prompt
    from_question = _plan(styles_yaml, "multi", ["周末去哪玩"])
    assert "周末去哪玩" in from_question.items[0].prompt[-1]["content"]


@pytest.mark.parametrize("text", [
    '[{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在呢"}]',
    '好的：\n```json\n[{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在呢"}]\n```',
])
def test_parse_dialogue_accepts(text):
    assert [m.role for m in parse_dialogue(text)] == ["user", "assistant"]


@pytest.mark.parametrize("text", [
    "不是 JSON",
    '[{"role": "user", "content": "在吗"}',
    '[{"role": "assistant", "content": "在呢"}]',
    '[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]',
    '[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]',
    '[{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]',
])
def test_parse_dialogue_rejects_as_retryable(text):
    with pytest.raises(TeacherError) as info:
        parse_dialogue(text)
    assert info.value.reason == "malformed_output" and info.value.retryable


FRAGMENT = [Message(role="assistant", content="救命 我又迟到了"), Message(role="user", content="好"),
            Message(role="assistant", content="别笑了 绝了")]


@pytest.mark.parametrize("text, lines", [
    ('["你人呢", "都等你半小时了"]', ["你人呢", "都等你半小时了"]),
    ('好的：\n```json\n[" 在吗 "]\n```', ["在吗"]),
    ('["好不好嘛"]', ["好不好嘛"]),  # the fragment's "好" is too short to count as a copy
    ('["你是不是又迟到了"]', ["你是不是又迟到了"]),  # shares 又迟到了 with the reply, but is a question of its own
])
def test_an_opening_is_one_or_two_short_lines_of_the_other_side(text, lines):
    assert parse_opening(text, FRAGMENT) == lines


@pytest.mark.parametrize("text, why", [
    ("你人呢", "no JSON list"),
    ('[{"role": "user", "content": "在吗"}]', "list of strings"),
    ("[]", "list of strings"),
    ('["在吗", "人呢", "说话"]', "1 to 2"),
    ('["在吗", ""]', "1 to 2"),
    ('["' + "很长" * 31 + '"]', "longer than 60"),
    ('["你是不是又迟到了", "救命 我又迟到了"]', "repeats the fragment"),
    ('["笑死 别笑了 绝了 哈哈"]', "repeats the fragment"),
    ('["别笑了！绝了！"]', "repeats the fragment"),  # punctuation does not make a copy new
    ('["我又迟到了吧"]', "repeats the fragment"),  # most of it is the reply's run 我又迟到了
])
def test_an_opening_that_is_not_one_is_retried(text, why):
    with pytest.raises(TeacherError) as error:
        parse_opening(text, FRAGMENT)
    assert error.value.reason == "malformed_output" and why in error.value.message


def test_the_opening_goes_before_the_fragment_and_joins_the_other_sides_first_turn():
    assert with_opening(["你人呢"], FRAGMENT) == [Message(role="user", content="你人呢"), *FRAGMENT]
    theirs_first = [Message(role="user", content="几点到"), Message(role="assistant", content="马上")]
    assert with_opening(["在吗", "晚上吃饭"], theirs_first) == [
        Message(role="user", content="在吗\n晚上吃饭\n几点到"), theirs_first[1]]


def test_context_items_read_the_fragment_as_a_chat_and_keep_the_samples_trigger():
    from emotune.data.records import Record
    from emotune.voice.job import probe_styles_yaml

    sample = Record(id="voice-00001", style="voice", messages=[Message(role="system", content="像我平时聊天那样回复。"),
                                                               *FRAGMENT])
    plan = build_plan(parse_styles(probe_styles_yaml(["好嘞"], "像我平时聊天那样回复。")), ["voice"], "context",
                      questions=[], dialogues=[], variants=3, seed=0, source="datasets/x", samples=[sample, sample])
    assert plan.total == 1 and plan.skipped == {"voice": {"duplicate": 1}}  # one item per sample, not per variant
    item = plan.items[0]
    assert item.expects == "opening" and item.sample is sample and item.context == sample.messages[:1]
    assert "我：救命 我又迟到了\n对方：好\n我：别笑了 绝了" in item.prompt[-1]["content"]
