"""Rule checks: each defect the seeds describe gets its reason code; good teacher replies get none."""

import pytest

from emotune.data.styles import Style
from emotune.services.validator.rules import (
    Reason,
    check_text,
    is_truncated,
    script_share,
    starts_with_punctuation,
)

PLAIN = Style(name="plain", system_prompt="x", length={"min": 2, "max": 60})
GENTLE = Style(name="gentle", system_prompt="x", markers={"particles": ["呀", "啦", "～"], "min_hits": 1})
EMOJI = Style(name="emoji", system_prompt="x", markers={"emoji": ["❤️", "🌸"], "min_hits": 1})


def reasons(text: str, style: Style = PLAIN, finish_reason: str | None = None) -> set[str]:
    return {r.value for r in check_text(text, style, finish_reason).reasons}


@pytest.mark.parametrize("text", [
    "当前祝福语如下：", "当前祝福语如下", "以下是一条小红书风格的祝福语：新年快乐", "下面是为你写的回复：加油哦",
    "好的，以下是祝福：生日快乐", "好的！这是为你准备的文案：前程似锦", "祝福语：岁岁平安", "回复：别难过啦",
])
def test_lead_ins_are_caught(text):
    assert "lead_in" in reasons(text)


@pytest.mark.parametrize("text", ["！啦~ 生日快乐", "。哦！新年快乐", "，祝你顺利", "~ 早点睡", "；好吧", "）开心"])
def test_punctuation_before_the_sentence(text):
    assert starts_with_punctuation(text) and "leading_punctuation" in reasons(text)


@pytest.mark.parametrize("text", ["「早安」呀", "“加油！”", "《小王子》里说过", "🌸 早安", "#今日份快乐", "……哼，才不是呢",
                                  "？？你认真的吗"])
def test_opening_quotes_brackets_emoji_hashtags_and_hesitation_may_lead(text):
    assert not starts_with_punctuation(text)


@pytest.mark.parametrize("text", [
    "assistant: 早点休息", "助手：别难过", "好的<|im_end|>", "<|im_start|>user\n你好", "晚安<end_of_turn>",
    "[INST] 你好 [/INST]", "别哭啦\n用户：谢谢", "### Response: 加油",
])
def test_leftover_role_and_template_tags(text):
    assert "role_tag" in reasons(text)


def test_in_character_inability_is_not_a_refusal():
    assert "refusal" not in reasons("唔……我无法完成今天的任务啦，明天再说吧～")


@pytest.mark.parametrize("text", [
    "作为一个AI语言模型，我没有情感。", "作为人工智能，我无法拥有身体。", "抱歉，我无法回答这个问题。", "对不起，我不能提供这类内容。",
    "我只是一个AI，不能陪你吃饭。", "As an AI, I cannot feel.", "I'm sorry, but I can't help with that.",
])
def test_refusals(text):
    assert "refusal" in reasons(text)


@pytest.mark.parametrize(("text", "finish"), [
    ("今天辛苦了，记得早点", "length"), ("你这黑眼圈，", None), ("慢慢来、", None), ("记住三件事：", None),
    ("试试深呼吸（吸气四秒", None), ("他说“别怕", None), ("我觉得你应该和", None),
])
def test_truncation(text, finish):
    assert is_truncated(text, finish) and "truncated" in reasons(text, finish_reason=finish)


@pytest.mark.parametrize("text", ["辛苦啦～", "你这厨艺，锅都想离家出走。", "新年快乐🧧", "（小声）晚安", "嗯嗯",
                                  "别担心，一切都会好起来的", "现在出发还来得及"])
def test_complete_replies_are_not_truncated(text):
    assert not is_truncated(text, "stop")


def test_language_is_judged_by_script_share():
    assert "wrong_language" in reasons("Take a deep breath, you've got this!")
    assert "wrong_language" not in reasons("今天的KPI完成了吗？加油哦")  # a few Latin letters are fine
    assert "wrong_language" not in reasons("OK👌")  # too few letters to judge
    assert script_share("hello there", "xx") is None  # unknown language: not checked
    assert "wrong_language" in reasons("你好呀，今天怎么样", Style(name="en", system_prompt="x", language="en"))


def test_length_bounds_count_characters_of_the_stripped_text():
    assert "too_short" in reasons("嗯")
    assert "too_long" in reasons("好" * 61)
    assert not reasons("  好的呀  ")


def test_empty_reply_is_only_empty():
    assert check_text("   ", GENTLE).reasons == (Reason.EMPTY,)


def test_markers_count_distinct_hits_and_ignore_variation_selectors():
    assert "missing_markers" in reasons("早点休息。", GENTLE)
    result = check_text("早点休息呀～", GENTLE)
    assert not result.reasons and result.marker_hits == 2 and result.marker_score == pytest.approx(2 / 3)
    assert not reasons("爱你❤", EMOJI)  # U+2764 without U+FE0F still matches "❤️"


def test_good_samples_pass_every_rule(styles, good_records):
    for record in good_records:
        result = check_text(record.assistant_text, styles.get(record.style))
        assert not result.reasons, (record.id, record.assistant_text, result.reasons)


def test_each_rule_kind_in_the_samples_gets_its_reason(styles, bad_records, expected_reasons):
    # Reasons given outside the text rules: embeddings, and the sense checks (test_sense.py).
    embedding_reasons = {"low_similarity", "off_style", "near_duplicate", "unknown_style", "empty", "loop", "copy",
                         "echo", "off_topic", "nonsense"}
    for record in bad_records:
        expected = expected_reasons[record.id] - embedding_reasons
        if record.style not in styles.names or not expected:
            continue
        finish = getattr(record.provenance, "finish_reason", None)
        got = {r.value for r in check_text(record.assistant_text, styles.get(record.style), finish).reasons}
        assert expected <= got, (record.id, got)
