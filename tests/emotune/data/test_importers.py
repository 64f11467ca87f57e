"""Question importers on realistic files: encodings, broken lines, LCCC segmentation, ChatGPT trees, WeChat folders."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from emotune.data.importers import detect_format, import_questions, parse_questions, unsegment
from emotune.data.textio import ReadReport, decode_bytes, iter_json_array
from emotune.errors import InvalidInput

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples" / "questions"
DATA = ROOT / "tests" / "data" / "questions"


def _dialogues(result) -> list[list[tuple[str, str]]]:
    return [[(m.role, m.content) for m in d] for d in result.dialogues]


def test_daily_questions_are_about_200_unique_everyday_questions():
    result = import_questions(EXAMPLES / "daily_zh.txt", strict=True)
    assert 200 <= len(result.questions) <= 230
    assert result.duplicates == 0 and result.report.errors == []
    assert all(2 <= len(q) <= 40 for q in result.questions)


@pytest.mark.parametrize(("segmented", "plain"), [
    ("你 好 啊", "你好啊"),
    ("iPhone 15 好 用 吗", "iPhone 15好用吗"),
    ("火锅 我 在 重庆 成都 吃 了 七八 顿 火锅", "火锅我在重庆成都吃了七八顿火锅"),
    ("刚 看完 《 流浪 地球 2 》 ， 太 震撼 了", "刚看完《流浪地球2》，太震撼了"),
    ("我 用 Python 写 了 个 小 爬虫", "我用Python写了个小爬虫"),
    ("I love New York 我 也 是", "I love New York我也是"),
    ("如 果 一 开 始 说 2 1 万 ， 真 的", "如果一开始说21万，真的"),  # character-level (CDial-GPT toy data)
    ("y s l 7 号 唇 釉", "ysl7号唇釉"),
    ("真 的 瘦 了 . . . . 上 次", "真的瘦了....上次"),
    ("Hello world , 你 好 😀 😀", "Hello world,你好😀😀"),
    ("version 2.0 is out !", "version 2.0 is out!"),
])
def test_unsegment_removes_segmentation_spaces_but_keeps_latin_spaces(segmented, plain):
    assert unsegment(segmented) == plain


def test_lccc_json_list_takes_openings_and_keeps_dialogues():
    result = import_questions(EXAMPLES / "lccc_sample.json")
    assert result.questions[:4] == ["火锅我在重庆成都吃了七八顿火锅", "今天下班好早啊，居然六点就到家了",
                                    "有没有人周末一起去爬山？", "iPhone 15好用吗？想换手机了"]
    assert len(result.questions) == 17 and result.duplicates == 1
    assert len(result.dialogues) == 18
    assert _dialogues(result)[3] == [("user", "iPhone 15好用吗？想换手机了"), ("assistant", "还行，就是电池不太耐用")]


def test_lccc_tab_separated_text_and_split_object():
    toy = import_questions(DATA / "lccc_toy_train.txt", "lccc", strict=True)
    assert toy.questions == ["我也要去健身，懒了半年了", "还要学Rap", "如果一开始说21万，真的没什么好生气的",
                             "真的瘦了....上次看见都没认出来", "求口红色号"]
    assert _dialogues(toy)[4] == [("user", "求口红色号"), ("assistant", "ysl7号唇釉")]
    splits = import_questions(DATA / "lccc_splits.json")
    assert splits.questions == ["今天早上起晚了", "下班一起吃饭吗", "你学校是哪的？"]
    assert [(e.line, e.field) for e in splits.report.errors] == [(18, "valid[1]")]  # the line it is on
    lccc_all_turns = import_questions(DATA / "lccc_splits.json", all_turns=True)
    assert "被你猜中了" in lccc_all_turns.questions and "又熬夜了吧" not in lccc_all_turns.questions


def test_jsonl_with_bom_and_broken_lines_keeps_the_good_ones():
    result = import_questions(DATA / "bom_questions.jsonl", "jsonl", field_path="question")
    assert result.questions == ["失眠了怎么办", "怎么跟室友沟通作息问题", "第一次见家长要带什么礼物", "周末适合看什么电影"]
    assert result.duplicates == 1  # "  失眠了怎么办  " on line 8
    errors = [(e.line, e.field) for e in result.report.errors]
    assert errors == [(3, None), (5, None), (6, "question"), (7, "question")]
    assert "broken JSON" in result.report.errors[0].message
    assert result.report.errors[2].message == "field missing"
    assert result.report.errors[3].message == "expected text, found int"
    assert str(result.report.errors[2]).endswith("bom_questions.jsonl:6: question: field missing")


def test_strict_stops_at_the_first_bad_line_naming_file_and_line():
    with pytest.raises(InvalidInput) as exc:
        import_questions(DATA / "bom_questions.jsonl", "jsonl", field_path="question", strict=True)
    assert exc.value.file.endswith("bom_questions.jsonl") and exc.value.line == 3


def test_json_field_path_with_wildcard_and_index():
    result = import_questions(DATA / "nested.json", "json", field_path="data.items.*.q")
    assert result.questions == ["怎样才能早睡早起", "最近压力好大"]
    assert [(e.field, e.message) for e in result.report.errors] == [("data.items[2].q", "field missing")]
    first = import_questions(DATA / "nested.json", "json", field_path="data.items.1.q")
    assert first.questions == ["最近压力好大"]
    array = parse_questions('[{"m": [{"c": "早"}]},\n{"m": []},\n{"m": [{"c": "晚"}]}]', "json", field_path="m.0.c")
    assert array.questions == ["早", "晚"]
    assert [(e.line, e.field) for e in array.report.errors] == [(2, "[1].m[0]")]
    with pytest.raises(InvalidInput, match="needs a field path"):
        import_questions(DATA / "nested.json", "json")
    with pytest.raises(InvalidInput, match="bad field path"):
        import_questions(DATA / "nested.json", "json", field_path="data..q")


def test_gbk_file_with_crlf_reads_correctly():
    assert (DATA / "gbk_lines.txt").read_bytes().startswith("今天".encode("gbk"))
    result = import_questions(DATA / "gbk_lines.txt")
    assert result.questions == ["今天好累啊，想喝奶茶", "周末去哪玩好呢？", "老板又催方案了，好烦！", "下雨了，我没带伞...",
                                "又胖了5斤！"]
    assert result.duplicates == 1


@pytest.mark.parametrize(("name", "found"), [("big5_lines.txt", "big5"), ("utf16_lines.txt", "UTF-16")])
def test_other_encodings_are_refused_saying_what_was_found(name, found):
    with pytest.raises(InvalidInput, match=found) as exc:
        import_questions(DATA / name)
    assert exc.value.file.endswith(name)
    assert "save the file as UTF-8" in str(exc.value) or "save it as UTF-8" in str(exc.value)


@pytest.mark.parametrize(("text", "encoding"), [
    ("今天好累啊，想喝奶茶", "gbk"), ("累", "gbk"), ("你好", "gbk"), ("今天天氣好嗎？我們去吃飯吧", "gbk"),
    ("降温了 多穿点", "gbk"), ("温柔 毒舌 傲娇 慵懒", "gbk"), ("失眠了怎么办\n", "utf-8-sig"), ("Plain ASCII only", "ascii"),
])
def test_decode_accepts_utf8_bom_and_gbk(text, encoding):
    assert decode_bytes(text.encode(encoding)) == text


@pytest.mark.parametrize(("text", "encoding"), [
    ("老闆又催方案了，好煩！", "big5"), ("今日はとても疲れました。", "shift_jis"), ("안녕하세요 오늘 날씨가 좋네요", "euc-kr"),
    ("Café crème brûlée", "latin-1"), ("你好世界", "utf-16-le"), ("Привет, как дела?", "cp1251"),
])
def test_decode_refuses_other_encodings_instead_of_mis_decoding_them_as_gbk(text, encoding):
    with pytest.raises(InvalidInput, match="UTF-8"):
        decode_bytes(text.encode(encoding), "q.txt")


def test_utf8_file_with_one_corrupt_byte_is_refused_at_its_line_not_read_whole_as_gbk():
    lines = ["今天好累啊，想喝奶茶", "周末去哪玩好呢？", "老板又催方案了，好烦！", "下雨了，我没带伞"]
    data = bytearray("\n".join(lines).encode("utf-8"))
    third = data.index("老".encode())
    data[third + 1] = 0x41  # a truncated character on line 3
    with pytest.raises(InvalidInput, match="UTF-8") as exc:
        decode_bytes(bytes(data), "q.txt")
    assert (exc.value.file, exc.value.line) == ("q.txt", 3)


def test_chatgpt_export_follows_current_node_and_skips_hidden_tool_and_non_text():
    result = import_questions(EXAMPLES / "chatgpt_export")
    assert result.questions == ["周末想给家人做顿饭，有什么简单又好吃的家常菜？", "明天上海会下雨吗？要不要带伞",
                                'How do I say "I miss you" in Chinese?']
    assert result.duplicates == 1
    dialogues = _dialogues(result)
    assert dialogues[0] == [  # the edited branch ("有没有不用开火的菜？") is not on the path to current_node
        ("user", "周末想给家人做顿饭，有什么简单又好吃的家常菜？"),
        ("assistant", "可以试试番茄炒蛋、可乐鸡翅和清炒时蔬：步骤少、不容易失败，一荤一素一汤就很丰盛了。"),
        ("user", "可乐鸡翅怎么做才不会太甜？"), ("assistant", "可乐少放一点，加一勺生抽和几片姜，最后大火收汁，甜味就刚刚好。")]
    assert dialogues[1] == [  # custom instructions, the image part, the browser call and its result are gone
        ("user", "明天上海会下雨吗？要不要带伞"), ("assistant", "明天上海有小雨，气温18到23度，出门记得带把伞。"),
        ("user", "那穿什么合适"), ("assistant", "长袖衬衫加一件薄外套就够了。")]
    assert dialogues[2] == [("user", 'How do I say "I miss you" in Chinese?'), ("assistant", '"我想你" (wǒ xiǎng nǐ).')]
    [error] = result.report.errors
    assert error.field == "[4].current_node" and "a-7-missing" in error.message
    assert error.file.endswith("conversations.json") and error.line > 1
    follow_ups = import_questions(EXAMPLES / "chatgpt_export", all_turns=True)
    assert "可乐鸡翅怎么做才不会太甜？" in follow_ups.questions
    assert "有没有不用开火的菜？" not in follow_ups.questions


def test_chatgpt_export_zip_and_minified_file(tmp_path):
    conversations = json.loads((EXAMPLES / "chatgpt_export" / "conversations.json").read_text("utf-8"))
    archive = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the export OpenAI mails: minified JSON next to chat.html
        zf.writestr("chat.html", "<html></html>")
        zf.writestr("conversations.json", json.dumps(conversations, ensure_ascii=False, separators=(",", ":")))
    assert detect_format(archive) == "chatgpt"
    result = import_questions(archive)
    assert len(result.questions) == 3 and len(result.dialogues) == 4
    [error] = result.report.errors
    assert (error.line, error.field) == (1, "[4].current_node")
    assert error.file == f"{archive}!conversations.json"
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("user.json", "{}")
    with pytest.raises(InvalidInput, match="no conversations.json"):
        import_questions(empty, "chatgpt")


def test_chatgpt_parent_loop_is_reported_not_followed_forever():
    loop = [{"title": "t", "current_node": "a", "mapping": {
        "a": {"id": "a", "parent": "b", "children": [], "message": None},
        "b": {"id": "b", "parent": "a", "children": ["a"], "message": None}}}]
    result = parse_questions(json.dumps(loop), "chatgpt", source="c.json")
    assert [(e.field, e.message) for e in result.report.errors] == [("[0].mapping.a.parent", "parent links loop at node 'a'")]


def test_wechat_export_folder_contact_folder_and_file():
    result = import_questions(EXAMPLES / "wechat_export")
    assert result.questions[:4] == ["吃饭了没", "降温了 多穿点", "你看你爸种的番茄", "在吗"]
    assert len(result.questions) == 8 and result.duplicates == 1  # "在吗" opens two conversations
    dialogues = _dialogues(result)
    assert ("user", "别老吃外卖[玫瑰]") in dialogues[0]  # WeChat emoji codes stay
    assert dialogues[2][0] == ("user", "你看你爸种的番茄")  # the [图片] placeholder is dropped
    assert all(d[0][0] == "user" and "system" not in {r for r, _ in d} for d in dialogues)
    contact = import_questions(EXAMPLES / "wechat_export" / "小王", "wechat")
    assert contact.questions == ["在吗", "推荐个耳机呗 三百以内", "你周末有空吗，帮我搬个家", "今天被老板骂了[流泪]",
                                 "你看了昨晚的球赛没"]
    one_file = import_questions(EXAMPLES / "wechat_export" / "小王" / "小王_dev.json")
    assert one_file.questions == ["在吗", "推荐个耳机呗 三百以内"]


def test_wechat_gbk_export_reports_bad_conversations_in_their_file():
    result = import_questions(DATA / "wechat_gbk")
    assert result.questions == ["明天几点出发", "晚上吃啥"]  # GBK decoded; from/value messages accepted too
    assert _dialogues(result)[1] == [("user", "晚上吃啥"), ("assistant", "火锅！")]
    file = str(DATA / "wechat_gbk" / "老张" / "老张_train.json")
    assert [(e.file, e.field) for e in result.report.errors] == [
        (file, "[1].conversations[1].role"), (file, "[2].messages")]
    assert [e.line for e in result.report.errors] == [18, 30]  # where each conversation starts


def test_long_questions_are_reported_and_skipped():
    result = parse_questions("短问题\n" + "长" * 50 + "\n", "lines", source="q.txt", max_chars=20)
    assert result.questions == ["短问题"]
    assert str(result.report.errors[0]) == "q.txt:2: question is 50 characters long (max 20)"


def test_detect_format_and_bad_requests(tmp_path):
    assert detect_format(EXAMPLES / "daily_zh.txt") == "lines"
    assert detect_format(EXAMPLES / "lccc_sample.json") == "lccc"
    assert detect_format(EXAMPLES / "questions.jsonl") == "jsonl"
    assert detect_format(EXAMPLES / "chatgpt_export") == "chatgpt"
    assert detect_format(EXAMPLES / "wechat_export") == "wechat"
    assert detect_format(EXAMPLES / "wechat_export" / "妈妈" / "妈妈_train.json") == "wechat"
    assert detect_format(DATA / "nested.json") == "json"
    with pytest.raises(InvalidInput, match="unknown question format 'csv'"):
        import_questions(EXAMPLES / "daily_zh.txt", "csv")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="file not found"):
        import_questions(tmp_path / "missing.txt")
    with pytest.raises(InvalidInput, match="reads a file, this is a folder"):
        import_questions(tmp_path, "lines")
    shutil.copytree(EXAMPLES / "wechat_export" / "妈妈", tmp_path / "妈妈")
    (tmp_path / "妈妈" / "妈妈_train.json").unlink()
    with pytest.raises(InvalidInput, match="no .json files"):
        import_questions(tmp_path, "wechat")


def test_json_array_items_carry_their_start_line_and_syntax_errors_stop_reading():
    report = ReadReport("a.json")
    items = list(iter_json_array('[\n  {"a": 1},\n  {"a":\n    2},\n  3\n]\n', report))
    assert items == [(2, {"a": 1}), (3, {"a": 2}), (5, 3)]
    broken = ReadReport("b.json")
    assert list(iter_json_array('[{"a": 1},\n {"a": oops},\n {"a": 3}]', broken)) == [(1, {"a": 1})]
    assert broken.errors[0].line == 2 and "rest of the file is skipped" in broken.errors[0].message
    trailing = ReadReport("c.json")
    assert list(iter_json_array("[1]\n\ngarbage", trailing)) == [(1, 1)]
    assert (trailing.errors[0].line, trailing.errors[0].message) == (3, "unexpected text after the closing ']'")


def test_limit_stops_reading_once_enough_questions_are_collected():
    daily = import_questions(EXAMPLES / "daily_zh.txt", limit=10)
    assert len(daily.questions) == 10 and daily.report.read == 10
    lccc = import_questions(EXAMPLES / "lccc_sample.json", limit=3)
    assert len(lccc.questions) == 3 and lccc.report.read == 3
    wechat = import_questions(EXAMPLES / "wechat_export", limit=2)
    assert wechat.questions == ["吃饭了没", "降温了 多穿点"]
    with pytest.raises(InvalidInput, match="limit must be at least 1"):
        import_questions(EXAMPLES / "daily_zh.txt", limit=0)
