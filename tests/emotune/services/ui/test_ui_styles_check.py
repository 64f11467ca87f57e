"""The Fine-tune page validates styles with the pipeline's own schema and shows where the problem is."""

import pytest

from emotune.errors import InvalidInput
from emotune.services.ui.styles_check import check_styles, error_context, read_upload, styles_table

VALID = """\
styles:
  - name: 温柔
    system_prompt: 你是一个温柔体贴的聊天助手
    few_shot:
      - user: 今天好累
        assistant: 辛苦啦～先歇一会儿吧
    reference_texts: [别着急，慢慢来]
    markers: {emoji: ["🌸"], particles: [呢, 呀]}
  - name: 毒舌
    system_prompt: 你说话尖酸刻薄但不失幽默
    temperature: 1.1
"""


def test_valid_document_summarised():
    check = check_styles(VALID)
    assert check.ok and check.error is None
    rows = styles_table(check.document)
    assert [r["style"] for r in rows] == ["温柔", "毒舌"]
    assert rows[0]["few-shot turns"] == 1 and rows[0]["markers"] == "🌸 呢 呀"
    assert rows[1]["temperature"] == 1.1


def test_bad_field_named_with_its_line():
    text = VALID.replace("temperature: 1.1", "temperature: hot")
    check = check_styles(text, "mine.yaml")
    assert not check.ok
    assert check.error.field == "styles[1].temperature" and check.error.line == 11
    assert check.error.file == "mine.yaml"
    context = error_context(text, check.error.line)
    assert ">" in context.splitlines()[-1] and "temperature: hot" in context.splitlines()[-1]
    assert [line[2:4] for line in context.splitlines()] == [" 9", "10", "11"]


def test_yaml_syntax_error_and_empty_document():
    broken = check_styles("styles:\n  - name: [unclosed\n")
    assert not broken.ok and broken.error.line is not None and "YAML" in broken.error.message
    empty = check_styles("   \n")
    assert not empty.ok and "empty" in empty.error.message
    missing = check_styles("styles:\n  - name: x\n")
    assert missing.error.field == "styles[0].system_prompt"


def test_upload_decoding():
    plain = VALID.replace("🌸", "*")  # GBK (Windows editors) has no emoji
    assert read_upload("gbk.yaml", plain.encode("gbk")) == plain
    assert read_upload("bom.yaml", b"\xef\xbb\xbf" + VALID.encode()) == VALID
    with pytest.raises(InvalidInput, match="UTF-16"):
        read_upload("u16.yaml", VALID.encode("utf-16"))
