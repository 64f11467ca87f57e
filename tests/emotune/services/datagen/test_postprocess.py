"""The built-in post-processing rules, applied and reported, and errors in a custom rules file."""

from __future__ import annotations

import pytest

from emotune.data.styles import Style
from emotune.errors import InvalidInput
from emotune.services.datagen.postprocess import PostProcessor

CHAT = Style(name="chat", system_prompt="x")
ONE_LINE = Style(name="blessing", system_prompt="x", one_line=True)


@pytest.fixture(scope="module")
def rules() -> PostProcessor:
    return PostProcessor.load()


@pytest.mark.parametrize(("raw", "style", "clean", "applied"), [
    ("“新年快乐，万事如意！”", CHAT, "新年快乐，万事如意！", ["strip_wrapping_quotes"]),
    ("「“岁岁平安”」", CHAT, "岁岁平安", ["strip_wrapping_quotes"]),
    ("“你好”他说“再见”", CHAT, "“你好”他说“再见”", []),  # quotes that close mid-text stay
    ("好的，以下是为您写的祝福：\n愿你前程似锦", CHAT, "愿你前程似锦", ["cut_lead_in"]),
    ("当前祝福语如下：岁岁平安", CHAT, "岁岁平安", ["cut_as_follows"]),
    ("Sure! Here's a warm reply: take a break~", CHAT, "take a break~", ["cut_lead_in"]),
    ("以下内容仅供参考", CHAT, "以下内容仅供参考", []),  # no colon: not a lead-in
    ("  辛苦啦   \n\n\n\n 早点休息  ", CHAT, "辛苦啦\n\n早点休息", ["normalise_whitespace"]),
    ("愿你平安喜乐🌸\n\n这条祝福温馨又得体。", ONE_LINE, "愿你平安喜乐🌸", ["first_paragraph"]),
    ("愿你平安喜乐🌸\n\n这条祝福温馨又得体。", CHAT, "愿你平安喜乐🌸\n\n这条祝福温馨又得体。", []),
    ("以下是祝福：\n\n“新年快乐！”\n希望你喜欢", ONE_LINE, "新年快乐！",
     ["cut_lead_in", "first_paragraph", "strip_wrapping_quotes"]),
])
def test_rules(rules, raw, style, clean, applied):
    assert rules.apply(raw, style) == (clean, applied)


def test_custom_rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: no_exclaim, kind: regex, pattern: '！+$', replace: '。'}\n", encoding="utf-8")
    assert PostProcessor.load(path).apply("太好了！！", CHAT) == ("太好了。", ["no_exclaim"])


@pytest.mark.parametrize(("text", "field"), [
    ("rules:\n  - {name: bad, kind: regex, pattern: '(unclosed'}\n", "rules.0"),
    ("rules:\n  - {name: q, kind: strip_pairs, pairs: ['\"']}\n", "rules.0.pairs"),
    ("rules:\n  - {name: q, kind: first_paragraph, only_if: shouting}\n", "rules.0.only_if"),
    ("rules:\n  - {name: q, kind: translate}\n", "rules.0.kind"),
])
def test_bad_rules_name_file_and_field(tmp_path, text, field):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        PostProcessor.load(path)
    assert info.value.file == str(path) and info.value.field == field
