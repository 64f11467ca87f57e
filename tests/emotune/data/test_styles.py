"""The style schema: shipped examples load, and every kind of mistake names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotune.data.styles import dump_styles, load_styles, parse_styles
from emotune.errors import InvalidInput

ROOT = Path(__file__).parents[3]
STYLES = ROOT / "examples" / "styles"


def test_emotion_examples_are_complete_styles():
    doc = load_styles(STYLES / "emotions.yaml")
    assert doc.names == ["温柔", "毒舌", "傲娇", "慵懒"]
    for style in doc.styles:
        assert 2 <= len(style.few_shot) <= 3
        assert len(style.reference_texts) >= 8
        assert len(set(style.reference_texts)) == len(style.reference_texts)
        assert style.markers and style.markers.all
        assert style.trigger and len(style.serving_prompt) < len(style.system_prompt)
        for turn in style.few_shot:  # the few-shot replies themselves respect the style's length bounds
            assert style.length.min <= len(turn.assistant) <= style.length.max, (style.name, turn.assistant)
    assert doc.get("慵懒").temperature == 0.7


def test_blessing_examples_are_one_line_styles_with_a_compatibility_filter():
    doc = load_styles(STYLES / "blessings.yaml")
    assert doc.names == ["小红书", "正常", "严肃"]
    assert all(style.one_line and len(style.reference_texts) >= 8 for style in doc.styles)
    combinatorial = doc.combinatorial
    recipients = {r.name for r in combinatorial.recipients}
    scenes = {s.name for s in combinatorial.scenes}
    assert {"妈妈", "爸爸", "老师", "领导", "同事", "朋友", "恋人", "客户"} <= recipients
    assert {"春节", "中秋节", "生日", "升职", "毕业", "乔迁", "婚礼", "退休"} <= scenes
    assert all(rule.reason for rule in combinatorial.exclude)
    assert not combinatorial.allowed("领导", "春节", "小红书")
    assert not combinatorial.allowed("客户", "七夕节", "正常")
    assert not combinatorial.allowed("妈妈", "教师节", "正常")
    assert combinatorial.allowed("老师", "教师节", "严肃")
    assert combinatorial.allowed("领导", "春节", "严肃")
    assert combinatorial.allowed("妈妈", "中秋节", "小红书")
    allowed = sum(combinatorial.allowed(r, s, st) for r in recipients for s in scenes for st in doc.names)
    assert 0.5 < allowed / (len(recipients) * len(scenes) * 3) < 0.9


@pytest.mark.parametrize("name", ["emotions.yaml", "blessings.yaml"])
def test_dump_styles_reads_back_to_the_same_document(name):
    doc = load_styles(STYLES / name)
    assert parse_styles(dump_styles(doc), "dumped.yaml") == doc


VALID = """\
styles:
  - name: 温柔
    system_prompt: 你是一个温柔体贴的聊天伙伴
    reference_texts: [辛苦啦~]
  - name: 毒舌
    system_prompt: 你是一个毒舌的损友
"""


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    (VALID + "    temperature: 3.5\n", 7, "styles[1].temperature", "less than or equal to 2"),
    (VALID.replace("毒舌", "温柔"), 5, "styles[1].name", "style name '温柔' appears twice"),
    (VALID + "    temprature: 0.5\n", 7, "styles[1].temprature", "Extra inputs are not permitted"),
    (VALID + "    length: {min: 50, max: 10}\n", 7, "styles[1].length", "min (50) is greater than max (10)"),
    (VALID.replace("[辛苦啦~]", "[辛苦啦~, '  ']"), 4, "styles[0].reference_texts", "reference text #1 is empty"),
    (VALID.replace("    system_prompt: 你是一个毒舌的损友\n", ""), 5, "styles[1].system_prompt", "Field required"),
    (VALID.replace("name: 毒舌", "name: 毒 舌"), 5, "styles[1].name", "should match pattern"),
    (VALID + "    few_shot:\n      - user: 又胖了\n", 8, "styles[1].few_shot[0].assistant", "Field required"),
    (VALID + "combinatorial:\n  recipients: [{name: 妈妈}]\n  scenes: [{name: 春节}]\n  exclude:\n"
     "    - {recipients: [妈妈], styles: [温柔]}\n    - {recipients: [老板], reason: x}\n",
     12, "combinatorial.exclude[1].recipients", "unknown name(s) ['老板']; known: ['妈妈']"),
    (VALID + "combinatorial:\n  recipients: [{name: 妈妈}]\n  scenes: [{name: 春节}]\n  exclude:\n"
     "    - {scenes: [春节], styles: [小红书]}\n", 11, "combinatorial.exclude[0].styles", "unknown name(s) ['小红书']"),
    (VALID + "combinatorial:\n  recipients: [{name: 妈妈}, {name: 妈妈}]\n  scenes: [{name: 春节}]\n",
     8, "combinatorial.recipients[1].name", "'妈妈' appears twice"),
])
def test_errors_name_file_line_and_field(text, line, field, message):
    with pytest.raises(InvalidInput) as exc:
        parse_styles(text, "styles.yaml")
    error = exc.value
    assert (error.file, error.line, error.field) == ("styles.yaml", line, field)
    assert message in error.reason
    assert str(error).startswith(f"styles.yaml:{line}: {field}: ")


def test_several_problems_are_counted():
    with pytest.raises(InvalidInput, match=r"and 1 more problem"):
        parse_styles(VALID + "    temperature: 3.5\n    language: chinese\n", "styles.yaml")


def test_yaml_and_json_syntax_errors_name_the_line():
    with pytest.raises(InvalidInput, match="not valid YAML") as exc:
        parse_styles("styles:\n  - name: a\n    system_prompt: [unclosed\n  - name: b\n", "s.yaml")
    assert exc.value.line is not None and exc.value.line >= 3
    with pytest.raises(InvalidInput, match="not valid JSON") as exc:
        parse_styles('{"styles": [\n {"name": "a",\n  "system_prompt": "x",,}\n]}', "s.json")
    assert exc.value.line == 3


def test_json_with_tabs_and_a_bare_list_keep_line_numbers():
    json_text = '{\n\t"styles": [\n\t\t{"name": "温柔", "system_prompt": "x"},\n\t\t{"name": "毒舌", "system_prompt": "y",\n' \
                '\t\t "temperature": "hot"}\n\t]\n}\n'
    with pytest.raises(InvalidInput) as exc:
        parse_styles(json_text, "s.json")
    assert (exc.value.line, exc.value.field) == (5, "styles[1].temperature")
    assert parse_styles(json_text.replace('"hot"', "0.9"), "s.json").get("毒舌").temperature == 0.9
    bare = "- name: a\n  system_prompt: x\n- name: b\n  system_prompt: ''\n"
    with pytest.raises(InvalidInput) as exc:
        parse_styles(bare, "list.yaml")
    assert (exc.value.line, exc.value.field) == (4, "styles[1].system_prompt")
    with pytest.raises(InvalidInput, match="expected a mapping"):
        parse_styles("just a string", "s.yaml")


def test_seed_style_config_json_loads(tmp_path):
    doc = load_styles(ROOT / "tests" / "data" / "styles" / "style_config.json")
    assert doc.names == ["温柔", "毒舌"]
    gentle = doc.get("温柔")
    assert [(t.user, t.assistant) for t in gentle.few_shot] == [
        ("今天好累啊", "辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸"), ("考试没考好...", "没关系的呀~ 下次一定会更好！需要我陪你聊聊吗？😊")]
    assert gentle.temperature == 0.3 and len(gentle.reference_texts) == 2
    bad = tmp_path / "style_config.json"
    bad.write_text('{\n "温柔": {"system_prompt": "x"},\n "毒舌": {"system_prompt": "y",\n  "temperature": 9}\n}\n',
                   encoding="gbk")
    with pytest.raises(InvalidInput) as exc:
        load_styles(bad)
    assert (exc.value.line, exc.value.field) == (4, "毒舌.temperature")


def test_gbk_styles_file_and_missing_file(tmp_path):
    path = tmp_path / "styles.yaml"
    path.write_bytes(VALID.encode("gbk"))
    assert load_styles(path).names == ["温柔", "毒舌"]
    with pytest.raises(InvalidInput, match="file not found"):
        load_styles(tmp_path / "nope.yaml")


def test_serving_prompt_and_unknown_style():
    doc = parse_styles(VALID + "    trigger: {system_prompt: 毒舌一点}\n")
    assert doc.get("毒舌").serving_prompt == "毒舌一点"
    assert doc.get("温柔").serving_prompt == "你是一个温柔体贴的聊天伙伴"
    with pytest.raises(InvalidInput, match="unknown style '傲娇'; known: 温柔, 毒舌"):
        doc.get("傲娇")
