"""Voice data: each export format read with speakers and times, each cleaning rule with its count, personal-data
masking, the session split, and bad exports reported by file, row and field."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from emotune.errors import InvalidInput
from emotune.voice.cleaning import CleaningRules, clean, find_personal_data
from emotune.voice.sources import read_export

REPO = Path(__file__).resolve().parents[3]

LIUHEN_HEADER = "localId,TalkerId,Type,SubType,IsSender,CreateTime,Status,StrContent,StrTime,Remark,NickName,Sender\n"


def liuhen_row(local_id: int, sender: int, t: int, text: str, type_: int = 1, talker: str = "wxid_a") -> str:
    text = '"' + text.replace('"', '""') + '"'
    return f"{local_id},{talker},{type_},0,{sender},{t},2,{text},2024-03-01 10:00:00,,小王,\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_liuhen_csv_reads_sender_time_and_kinds(tmp_path: Path) -> None:
    t = 1_700_000_000
    rows = [liuhen_row(1, 0, t, "在吗"), liuhen_row(2, 1, t + 5, "在滴"), liuhen_row(3, 1, t + 6, "[图片]", 3),
            liuhen_row(4, 0, t + 9, "你撤回了一条消息", 10002), liuhen_row(5, 0, t + 10, "以下为新消息", 10000)]
    export = read_export(write(tmp_path / "小王" / "小王.csv", LIUHEN_HEADER + "".join(rows)))
    assert export.source == "wechat-csv"
    [conversation] = export.conversations
    assert [(m.voice, m.kind) for m in conversation.messages] == [
        (False, "text"), (True, "text"), (True, "media"), (False, "recalled"), (False, "system")]
    assert conversation.messages[1].time == t + 5
    assert conversation.messages[0].where.endswith("小王.csv:2")


def test_pywxdump_csv(tmp_path: Path) -> None:
    text = ("id,MsgSvrID,type_name,is_sender,talker,room_name,msg,src,CreateTime\n"
            "1,11,文本,0,wxid_b,,今天吃啥,,2024-03-01 12:00:00\n"
            "2,12,文本,1,wxid_b,,火锅冲！,,2024-03-01 12:00:30\n"
            "3,13,动画表情,1,wxid_b,,,,2024-03-01 12:00:31\n")
    export = read_export(write(tmp_path / "export.csv", text))
    [conversation] = export.conversations
    assert [(m.voice, m.text, m.kind) for m in conversation.messages] == [
        (False, "今天吃啥", "text"), (True, "火锅冲！", "text"), (True, "", "media")]


def test_liuhen_json_folder_and_zip() -> None:
    folder = REPO / "examples" / "questions" / "wechat_export"
    export = read_export(folder)
    assert export.source == "wechat-json"
    assert all(c.fragment for c in export.conversations)
    mine = [m.text for c in export.conversations for m in c.messages if m.voice]
    assert "吃了吃了 公司食堂" in mine
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in folder.rglob("*.json"):
            archive.write(file, file.relative_to(folder.parent).as_posix())
    zipped = read_export(data=buffer.getvalue(), filename="wechat.zip")
    assert zipped.voice_messages == export.voice_messages


def chatgpt_conversation(turns: list[tuple[str, str]], branch: str | None = None) -> dict:
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["n0"]}}
    parent = "root"
    for index, (role, text) in enumerate(turns):
        node = f"n{index}"
        mapping[node] = {"id": node, "parent": parent, "children": [], "message": {
            "author": {"role": role}, "create_time": 1_700_000_000 + index,
            "content": {"content_type": "text", "parts": [text]}}}
        mapping[parent]["children"].append(node)
        parent = node
    if branch:  # an edited answer on another branch, not the current node's path
        mapping["dead"] = {"id": "dead", "parent": "n0", "children": [], "message": {
            "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": [branch]}}}
    return {"id": "c1", "title": "t", "mapping": mapping, "current_node": parent}


def test_chatgpt_zip_current_branch_only_and_bad_item() -> None:
    conversations = [chatgpt_conversation([("user", "hi"), ("assistant", "喵～ 你好 🐾")], branch="old answer"),
                     {"id": "broken", "mapping": {}, "current_node": "x"}]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("conversations.json", json.dumps(conversations, ensure_ascii=False, indent=1))
        archive.writestr("chat.html", "<html></html>")
    export = read_export(data=buffer.getvalue(), filename="export.zip")
    assert export.source == "chatgpt"
    [conversation] = export.conversations
    assert [(m.voice, m.text) for m in conversation.messages] == [(False, "hi"), (True, "喵～ 你好 🐾")]
    [error] = export.report.errors
    assert "[1].mapping" in str(error) and "conversations.json" in str(error)
    user = read_export(data=buffer.getvalue(), filename="export.zip", speaker="user")
    assert [m.voice for m in user.conversations[0].messages] == [True, False]


def test_bad_export_errors_name_file_row_and_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="missing column"):
        read_export(write(tmp_path / "a.csv", "foo,bar\n1,2\n"))
    rows = LIUHEN_HEADER + liuhen_row(1, 0, 1_700_000_000, "在吗") + "2,wxid_a,1,0,1,yesterday,2,好的,,,,\n" \
        + liuhen_row(3, 1, 1_700_000_009, "来了") + "4,wxid_a,1,0,maybe,1700000010,2,嗯,,,,\n"
    export = read_export(write(tmp_path / "b.csv", rows))
    messages = [e for e in export.report.errors]
    assert [(e.line, e.field) for e in messages] == [(3, "CreateTime"), (5, "IsSender")]
    assert export.voice_messages == 1  # the good part is read
    with pytest.raises(InvalidInput, match="no messages of the voice"):
        read_export(write(tmp_path / "c.csv", LIUHEN_HEADER + liuhen_row(1, 0, 1_700_000_000, "在吗")))
    with pytest.raises(InvalidInput, match="not a readable zip"):
        read_export(data=b"PK\x03\x04garbage", filename="x.zip")


def test_personal_data_masked_by_kind() -> None:
    text = ("电话13812345678，邮箱 me@example.com，身份证11010519491231002X，卡号6222 0200 0000 0000 008? "
            "订单号20240301123456789")
    masked, found = find_personal_data(text)
    assert dict(found) == {"phone": 1, "email": 1, "id_card": 1}
    assert "[手机号]" in masked and "[邮箱]" in masked and "[身份证号]" in masked
    assert "订单号20240301123456789" in masked  # not a card (fails Luhn), not an ID (no date at its place)
    card, found = find_personal_data("卡号 4111 1111 1111 1111 收到")
    assert card == "卡号 [银行卡号] 收到" and found["bank_card"] == 1


def conversation_csv(tmp_path: Path) -> Path:
    t = 1_700_000_000
    rows = [
        liuhen_row(1, 0, t, "在吗"), liuhen_row(2, 1, t + 10, "在滴"), liuhen_row(3, 1, t + 12, "咋啦"),  # merged
        liuhen_row(4, 0, t + 20, "我电话13812345678记一下"), liuhen_row(5, 1, t + 30, "好滴收到"),
        liuhen_row(6, 1, t + 31, "[图片]", 3), liuhen_row(7, 0, t + 40, "你撤回了一条消息", 10002),
        liuhen_row(8, 0, t + 41, "以下为新消息", 10000), liuhen_row(9, 0, t + 50, "   "),
        liuhen_row(10, 0, t + 60, "晚上吃啥"), liuhen_row(11, 1, t + 70, "嗯"),  # too short
        liuhen_row(12, 0, t + 80, "说长一点"), liuhen_row(13, 1, t + 90, "啊" * 50),  # too long at max_chars 40
        liuhen_row(14, 0, t + 100, "在吗"), liuhen_row(15, 1, t + 110, "在滴\n咋啦"),  # duplicate pair
        # next day: a new session; its first message is mine (no context)
        liuhen_row(16, 1, t + 86_400, "早呀"), liuhen_row(17, 0, t + 86_410, "早"),
        liuhen_row(18, 1, t + 86_420, "今天冲鸭"),
    ]
    return write(tmp_path / "小王.csv", LIUHEN_HEADER + "".join(rows))


def test_each_cleaning_rule_counted(tmp_path: Path) -> None:
    export = read_export(conversation_csv(tmp_path))
    cleaned = clean(export, CleaningRules(max_chars=40, held_out_fraction=0))
    rules = cleaned.report.rules
    assert rules["media"] == 1 and rules["recalled"] == 1 and rules["system"] == 1 and rules["empty"] == 1
    assert rules["phone"] == 1
    assert rules["merged"] == 1
    assert rules["session_splits"] == 1 and cleaned.report.sessions == 2
    assert rules["too_short"] == 1 and rules["too_long"] == 1 and rules["duplicate"] == 1
    assert rules["no_context"] == 1
    replies = [s.reply for s in cleaned.train]
    assert replies == ["在滴\n咋啦", "好滴收到", "今天冲鸭"]
    assert cleaned.train[1].context[-1] == (False, "我电话[手机号]记一下")
    # the next day's reply sees only that day's context, not yesterday's
    assert cleaned.train[2].context == [(False, "早")]
    text = "\n".join(cleaned.report.lines())
    assert "1 phone" in text and "1 duplicates" in text


def test_personal_data_drop_mode(tmp_path: Path) -> None:
    cleaned = clean(read_export(conversation_csv(tmp_path)),
                    CleaningRules(max_chars=40, held_out_fraction=0, personal_data="drop"))
    assert cleaned.report.rules["personal_data_dropped"] == 1
    assert all("[手机号]" not in text for s in cleaned.train for _, text in s.context)


def test_session_gap_and_context_turns(tmp_path: Path) -> None:
    export = read_export(conversation_csv(tmp_path))
    one_session = clean(export, CleaningRules(max_chars=40, held_out_fraction=0, session_gap_minutes=10_000))
    assert one_session.report.rules["session_splits"] == 0
    # 早呀 now follows the previous day's last reply of mine and is merged into it
    assert one_session.report.rules["merged"] == 2
    assert "在滴\n咋啦\n早呀" in [s.reply for s in one_session.train] or one_session.report.rules["duplicate"] == 0
    short = clean(export, CleaningRules(max_chars=40, held_out_fraction=0, context_turns=1))
    assert all(len(s.context) == 1 for s in short.train)


def test_held_out_sessions_never_trained_on(tmp_path: Path) -> None:
    t = 1_700_000_000
    rows = []
    for day in range(20):
        base = t + day * 86_400
        rows += [liuhen_row(day * 3, 0, base, f"第{day}天在干嘛"), liuhen_row(day * 3 + 1, 1, base + 5,
                                                                            f"第{day}天在摸鱼哈哈哈")]
    cleaned = clean(read_export(write(tmp_path / "a.csv", LIUHEN_HEADER + "".join(rows))),
                    CleaningRules(held_out_fraction=0.2, seed=3))
    assert cleaned.report.held_out_sessions == 4 and cleaned.report.train_sessions == 16
    assert not {s.session for s in cleaned.train} & {s.session for s in cleaned.held_out}
    again = clean(read_export(tmp_path / "a.csv"), CleaningRules(held_out_fraction=0.2, seed=3))
    assert [s.reply for s in again.held_out] == [s.reply for s in cleaned.held_out]
    records = cleaned.records("你是我。")
    assert records[0].messages[0].role == "system" and records[0].messages[-1].role == "assistant"


def test_example_exports() -> None:
    """The shipped examples: enough of a consistent voice to learn from, and what real exports hold."""
    wechat = clean(read_export(REPO / "examples" / "voice" / "wechat_export"), CleaningRules(held_out_fraction=0.2))
    rules = wechat.report.rules
    assert rules["media"] > 0 and rules["recalled"] > 0 and rules["system"] > 0
    assert rules["phone"] > 0 and rules["email"] > 0 and rules["session_splits"] > 0 and rules["merged"] > 0
    assert wechat.report.train_samples >= 80 and wechat.report.held_out_samples >= 16
    chatgpt = clean(read_export(REPO / "examples" / "voice" / "chatgpt_export.zip"))
    assert all(s.reply.startswith("喵～") and s.reply.endswith("🐾") for s in chatgpt.train)


def test_voice_job_data_and_probe_styles() -> None:
    """What the pipeline takes from an export: records with the trigger, held-out contexts, the probe's styles."""
    from emotune.data.styles import parse_styles
    from emotune.voice.job import DEFAULT_TRIGGER, prepare, probe_styles_yaml
    from emotune.voice.report import format_voice_table

    data = prepare(None, "wechat", path=str(REPO / "examples" / "voice" / "wechat_export"), seed=7)
    assert data.records[0].messages[0].content == DEFAULT_TRIGGER and data.records[0].style == "voice"
    assert data.held_out and data.held_out[0]["context"][0]["role"] == "user"
    assert not {r.meta["session"] for r in data.records} & {s["session"] for s in data.held_out}
    styles = parse_styles(probe_styles_yaml(data.probe_references, data.trigger), "probe")
    assert styles.names == ["voice", "assistant"] and len(styles.get("voice").reference_texts) == 48
    # The probe's contexts are training contexts whose person's reply is the reference: the base model answers them
    # for the contrast (same contexts, same language), and none is held out.
    by_reply = {r.messages[-1].content: [m.model_dump() for m in r.messages[1:-1]] for r in data.records}
    assert len(data.probe_contexts) == 48
    assert all(by_reply[reply] == context for reply, context in zip(data.probe_references, data.probe_contexts,
                                                                    strict=True))
    contrasted = parse_styles(probe_styles_yaml(data.probe_references, data.trigger, ["好的，以下是建议。"]), "probe")
    assert contrasted.get("assistant").reference_texts == ["好的，以下是建议。"]
    table = format_voice_table({"table": [{"config": "base", "model": "b", "voice_score": -0.01,
                                           "voice_accuracy": 0.2, "mean_chars": 80.0}],
                                "verdicts": {"voice": {"mean_lift": 0.03, "ci_low": 0.01, "ci_high": 0.05, "wins": 12,
                                                       "questions": 16, "p_value": 0.004, "retention": 0.6}},
                                "classifier": "centroid probe", "verdict": "promoted",
                                "probe": {"real_read_as_voice": 0.9, "base_read_as_not": 0.75,
                                          "balanced_accuracy": 0.825}})
    assert "p=0.004" in table and "60% of the way" in table
    assert "reads 90% of the person's as the voice and 75% of the base model's as not (balanced accuracy 82%)" \
        in table
