"""Chat exports read as conversations of messages, each with its speaker, time and kind — the person's own
replies kept (``emotune.data.importers`` reads the same exports only as seed questions for a teacher).

Sources (``VoiceSource``):

- ``wechat-json`` — 留痕 (WeChatMsg)'s "AI训练" export as in seed 003: one folder per contact holding
  ``*_train.json`` / ``*_dev.json`` lists of ``{"conversations": [{"role", "content"}]}``; ``assistant`` is the
  exporter ("me"), ``user`` the contact. Each item is already a fragment of one sitting (no timestamps), so each
  becomes one session.
- ``wechat-csv`` — a WeChat CSV as 留痕 (``localId,TalkerId,Type,SubType,IsSender,CreateTime,Status,StrContent,
  StrTime,Remark,NickName,Sender``) and PyWxDump (``id,MsgSvrID,type_name,is_sender,talker,room_name,msg|content,
  src,CreateTime``) write it: one message a row, a sender flag, a timestamp. One file per contact, or a file holding
  several talkers (split by ``TalkerId`` / ``talker``).
- ``chatgpt`` — a ChatGPT export (``conversations.json``, its folder or the zip OpenAI mails): per conversation the
  path from the root to ``current_node`` only (the branch the user last saw), with ``create_time``.

Each takes a folder, a zip of it, or one file (or the bytes of an upload and its file name). Whose voice is
learned: a WeChat speaker (``me``, the default, is the exporter; any other name matches ``NickName``/``Sender``/
``Remark``/``talker``), or ChatGPT's ``assistant`` (default) or ``user``.

A bad row or item is reported with file, line (row) and field and the rest is read; an export with nothing usable
is an :class:`~emotune.errors.InvalidInput` naming the file.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from emotune.data.importers import chatgpt_path, chatgpt_role
from emotune.data.textio import ItemError, LineError, ReadReport, decode_bytes, iter_json_array
from emotune.errors import InvalidInput

VoiceSource = Literal["auto", "wechat-json", "wechat-csv", "chatgpt"]
VOICE_SOURCES: tuple[str, ...] = ("auto", "wechat-json", "wechat-csv", "chatgpt")
Kind = Literal["text", "media", "recalled", "system"]
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024

# What WeChat exporters write for what is not text; emoji codes like "[玫瑰]" stay text.
MEDIA = re.compile(r"^\s*\[(图片|语音|视频|动画表情|表情|文件|位置|链接|名片|红包|转账|语音通话|视频通话|聊天记录|小程序|"
                   r"音乐|Photo|Image|Voice|Video|Sticker|File|Location|Link)\]\s*$", re.IGNORECASE)
RECALLED = re.compile(r"撤回了一条消息|recalled a message")
SYSTEM = re.compile(r"^(以下为新消息|你已添加了.*现在可以开始聊天了|.*拍了拍.*|.*加入了群聊|.*修改群名为.*|"
                    r"以上是打招呼的内容|你已成为新群主|.*开启了朋友验证.*)$")

# 留痕's Type codes (WeChat's message types) and PyWxDump's type_name values.
_CSV_TYPES: dict[str, Kind] = {
    "1": "text", "3": "media", "34": "media", "42": "media", "43": "media", "47": "media", "48": "media",
    "49": "media", "50": "media", "10000": "system", "10002": "recalled",
    "文本": "text", "图片": "media", "语音": "media", "视频": "media", "动画表情": "media", "表情": "media",
    "文件": "media", "位置": "media", "分享卡片": "media", "名片": "media", "语音通话": "media", "合并转发": "media",
    "引用回复": "text", "系统通知": "system", "拍一拍": "system", "撤回消息": "recalled",
}


@dataclass
class VoiceMessage:
    voice: bool  # said by the person whose voice is learned
    speaker: str
    text: str
    time: float | None = None  # unix seconds
    kind: Kind = "text"
    where: str = ""  # file:line (row) it came from


@dataclass
class Conversation:
    id: str
    messages: list[VoiceMessage]
    fragment: bool = False  # already one sitting (a sharegpt item): never split further


@dataclass
class ImportedExport:
    source: str  # the source format read
    conversations: list[Conversation]
    report: ReadReport
    files: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(len(c.messages) for c in self.conversations)

    @property
    def voice_messages(self) -> int:
        return sum(m.voice for c in self.conversations for m in c.messages)


# ------------------------------------------------------------------------------------------- files of an export

@dataclass
class _Entry:
    name: str  # shown in errors
    path: str  # relative, with "/"
    read: Any  # () -> bytes


def _entries(data: bytes | None, path: Path | None, name: str, max_member_bytes: int) -> list[_Entry]:
    """The files of an export: a folder's, a zip's members (bounded), or the one file."""
    if path is not None and path.is_dir():
        return [_Entry(str(p), p.relative_to(path).as_posix(), p.read_bytes)
                for p in sorted(path.rglob("*")) if p.is_file()]
    raw = data if data is not None else path.read_bytes()
    if raw[:4] == b"PK\x03\x04" or name.lower().endswith(".zip"):
        from emotune.data.importers import read_zip_member

        try:
            archive = zipfile.ZipFile(io.BytesIO(raw))
            members = [m for m in archive.namelist() if not m.endswith("/") and "__MACOSX" not in m]
        except zipfile.BadZipFile as exc:
            raise InvalidInput(f"not a readable zip archive: {exc}", file=name) from None
        return [_Entry(f"{name}!{m}", m, lambda m=m: read_zip_member(archive, m, max_member_bytes, f"{name}!{m}"))
                for m in sorted(members)]
    return [_Entry(name, PurePosixPath(name).name, lambda: raw)]


def detect_source(entries: list[_Entry]) -> str:
    names = [PurePosixPath(e.path).name.lower() for e in entries]
    if "conversations.json" in names:
        return "chatgpt"
    if any(n.endswith(".csv") for n in names):
        return "wechat-csv"
    if any(n.endswith(".json") for n in names):
        return "wechat-json"
    raise InvalidInput("not a chat export: no conversations.json (ChatGPT), .csv or .json (WeChat) inside",
                       file=entries[0].name if entries else None)


# ------------------------------------------------------------------------------------------------ wechat json

def _wechat_json(entry: _Entry, report: ReadReport, me: bool) -> Iterator[Conversation]:
    text = decode_bytes(entry.read(), entry.name)
    contact = PurePosixPath(entry.path).parent.name or PurePosixPath(entry.path).stem
    file_report = ReadReport(entry.name)
    for index, (line, item) in enumerate(iter_json_array(text, file_report)):
        key = "conversations" if isinstance(item, dict) and "conversations" in item else "messages"
        messages = item.get(key) if isinstance(item, dict) else None
        if not isinstance(messages, list):
            file_report.fail(line, "expected an object with a list of messages", f"[{index}].{key}")
            continue
        out, bad = [], None
        for number, message in enumerate(messages):
            where = f"[{index}].{key}[{number}]"
            if not isinstance(message, dict):
                bad = ("expected a message object", where)
                break
            role_key, content_key = ("role", "content") if "role" in message else ("from", "value")
            role, content = message.get(role_key), message.get(content_key)
            if role == "system":
                continue
            if role not in ("user", "human", "assistant", "gpt"):
                bad = (f"unknown role {role!r} (expected user/assistant)", f"{where}.{role_key}")
                break
            if not isinstance(content, str):
                bad = ("expected text", f"{where}.{content_key}")
                break
            mine = role in ("assistant", "gpt")
            out.append(VoiceMessage(voice=mine == me, speaker="me" if mine else contact, text=content,
                                    kind=_kind_of_text(content), where=f"{entry.name}:{line}"))
        if bad:
            file_report.fail(line, bad[0], bad[1])
            continue
        yield Conversation(f"{contact}#{index}", out, fragment=True)
    report.absorb(file_report)


# ------------------------------------------------------------------------------------------------- wechat csv

_COLUMNS = {
    "sender": ("IsSender", "is_sender", "issender"),
    "text": ("StrContent", "msg", "content", "Content", "message"),
    "time": ("CreateTime", "StrTime", "create_time", "CreateTimeStr", "time"),
    "type": ("Type", "type_name", "type"),
    "talker": ("TalkerId", "talker", "Talker", "room_name"),
    "name": ("NickName", "Sender", "Remark", "sender", "talker"),
}


def _column(header: list[str], role: str) -> str | None:
    return next((c for c in _COLUMNS[role] if c in header), None)


def parse_time(value: str) -> float:
    value = value.strip()
    if re.fullmatch(r"\d{9,13}(\.\d+)?", value):
        seconds = float(value)
        return seconds / 1000 if seconds > 1e11 else seconds  # milliseconds in some exports
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                    "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, pattern).timestamp()
        except ValueError:
            continue
    raise ValueError(f"unreadable time {value!r} (expected unix seconds or YYYY-MM-DD HH:MM:SS)")


def _kind_of_text(text: str) -> Kind:
    if MEDIA.match(text):
        return "media"
    if RECALLED.search(text):
        return "recalled"
    if SYSTEM.match(text.strip()):
        return "system"
    return "text"


def _wechat_csv(entry: _Entry, report: ReadReport, speaker: str) -> Iterator[Conversation]:
    text = decode_bytes(entry.read(), entry.name)
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    columns = {role: _column(header, role) for role in _COLUMNS}
    missing = [role for role in ("text", "time") if columns[role] is None]
    if speaker == "me" and columns["sender"] is None:
        missing.append("sender")
    if missing:
        wanted = "; ".join(f"{role}: one of {', '.join(_COLUMNS[role])}" for role in missing)
        report.fail(1, f"not a WeChat CSV export: missing column(s) ({wanted})", "header", file=entry.name)
        return
    default_talker = PurePosixPath(entry.path).stem
    talkers: dict[str, list[VoiceMessage]] = {}
    for row_number, row in enumerate(reader, start=2):
        report.read += 1
        where = f"{entry.name}:{row_number}"
        try:
            content = row.get(columns["text"])
            if content is None:
                raise ItemError("the row has fewer fields than the header", columns["text"])
            raw_time = row.get(columns["time"]) or ""
            try:
                time = parse_time(raw_time)
            except ValueError as exc:
                raise ItemError(str(exc), columns["time"]) from None
            name = (row.get(columns["name"]) or "").strip() if columns["name"] else ""
            if columns["sender"]:
                flag = (row.get(columns["sender"]) or "").strip()
                if flag not in ("0", "1", "True", "False", "true", "false"):
                    raise ItemError(f"sender flag {flag!r} is not 0/1", columns["sender"])
                mine = flag in ("1", "True", "true")
            else:
                mine = False
            voice = mine if speaker == "me" else (not mine and name == speaker)
            type_value = (row.get(columns["type"]) or "").strip() if columns["type"] else ""
            kind = _CSV_TYPES.get(type_value, "media" if type_value and type_value not in _CSV_TYPES else "text")
            if kind == "text":
                kind = _kind_of_text(content)
        except ItemError as exc:
            report.fail(row_number, str(exc), exc.field, file=entry.name)
            continue
        talker = (row.get(columns["talker"]) or "").strip() if columns["talker"] else ""
        talkers.setdefault(talker or default_talker, []).append(VoiceMessage(
            voice=voice, speaker="me" if mine else (name or talker or default_talker), text=content, time=time,
            kind=kind, where=where))
    for talker, messages in talkers.items():
        messages.sort(key=lambda m: m.time or 0.0)  # stable: rows of one second keep their order
        yield Conversation(talker, messages)




# ---------------------------------------------------------------------------------------------------- chatgpt

def _chatgpt_message(message: dict[str, Any]) -> tuple[str, str, Kind, float | None] | None:
    """(role, text, kind, time) of a user/assistant message; None for hidden, system and tool ones."""
    role = chatgpt_role(message)
    if role is None:
        return None
    content = message.get("content") or {}
    created = message.get("create_time")
    created = float(created) if isinstance(created, int | float) else None
    if content.get("content_type") not in ("text", "multimodal_text"):
        return role, "", "system", created  # thoughts, code, tool results: not said in the chat
    parts = content.get("parts") or []
    text = "\n".join(p for p in parts if isinstance(p, str)).strip()
    if not text:
        return role, "", "media" if parts else "text", created
    return role, text, "text", created




def _chatgpt(entry: _Entry, report: ReadReport, speaker: str) -> Iterator[Conversation]:
    text = decode_bytes(entry.read(), entry.name)
    file_report = ReadReport(entry.name)
    for index, (line, conversation) in enumerate(iter_json_array(text, file_report)):
        try:
            if not isinstance(conversation, dict):
                raise ItemError(f"expected a conversation object, found {type(conversation).__name__}")
            path = chatgpt_path(conversation)
        except ItemError as exc:
            file_report.fail(line, str(exc), f"[{index}].{exc.field}" if exc.field else f"[{index}]")
            continue
        messages = []
        for message in path:
            found = _chatgpt_message(message)
            if found is None:
                continue
            role, content, kind, created = found
            messages.append(VoiceMessage(voice=role == speaker, speaker=role, text=content, time=created,
                                         kind=kind, where=f"{entry.name}:{line}"))
        yield Conversation(str(conversation.get("id") or conversation.get("title") or index), messages,
                           fragment=True)
    report.absorb(file_report)


# ------------------------------------------------------------------------------------------------------ entry

def read_export(path: str | Path | None = None, *, data: bytes | None = None, filename: str | None = None,
                source: VoiceSource = "auto", speaker: str = "", max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
                ) -> ImportedExport:
    """Conversations from an export: ``path`` (a folder, a zip or one file) or ``data`` (an upload's bytes, with
    its ``filename``). ``speaker``: whose voice (WeChat: ``me`` or a name; ChatGPT: ``assistant`` or ``user``;
    empty: ``me`` / ``assistant``)."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise InvalidInput("file not found", file=str(path))
    name = filename or (str(path) if path is not None else "<upload>")
    entries = _entries(data, path, name, max_member_bytes)
    if not entries:
        raise InvalidInput("the export is empty", file=name)
    if source == "auto":
        source = detect_source(entries)
    if source not in VOICE_SOURCES:
        raise InvalidInput(f"unknown voice source {source!r}; known: {', '.join(VOICE_SOURCES)}", field="source")
    report = ReadReport(name)
    conversations: list[Conversation] = []
    used: list[str] = []
    if source == "chatgpt":
        speaker = speaker or "assistant"
        if speaker not in ("assistant", "user"):
            raise InvalidInput(f"a ChatGPT export's voice is 'assistant' or 'user', not {speaker!r}",
                               field="speaker")
        chosen = [e for e in entries if PurePosixPath(e.path).name.lower() == "conversations.json"][:1]
        if not chosen:
            raise InvalidInput("no conversations.json in this ChatGPT export", file=name)
        reader = lambda entry: _chatgpt(entry, report, speaker)
    elif source == "wechat-csv":
        speaker = speaker or "me"
        chosen = [e for e in entries if e.path.lower().endswith(".csv")]
        reader = lambda entry: _wechat_csv(entry, report, speaker)
    else:
        speaker = speaker or "me"
        if speaker not in ("me", "contact"):
            raise InvalidInput("a 留痕 JSON export knows only 'me' (assistant) and 'contact' (user)",
                               field="speaker")
        chosen = [e for e in entries if e.path.lower().endswith(".json")]
        reader = lambda entry: _wechat_json(entry, report, speaker == "me")
    if not chosen:
        raise InvalidInput(f"no {source} files in this export", file=name)
    for entry in chosen:
        conversations.extend(reader(entry))
        used.append(entry.name)
    result = ImportedExport(source, [c for c in conversations if c.messages], report, used)
    if not result.voice_messages:
        first = f" (first problem: {report.errors[0]})" if report.errors else ""
        raise InvalidInput(f"no messages of the voice {speaker!r} in this {source} export ({result.messages} "
                           f"messages read){first}", file=name, field="speaker" if result.messages else None)
    return result


def describe_errors(errors: list[LineError], limit: int = 5) -> list[str]:
    shown = [str(e) for e in errors[:limit]]
    if len(errors) > limit:
        shown.append(f"... and {len(errors) - limit} more")
    return shown
