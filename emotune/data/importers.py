"""Question importers: seed questions (and whole dialogues, for multi-turn generation) from the files people have.

Formats (``QuestionFormat``):

- ``lines``   - one question per line (seed 000's ``cleaned_output.txt``).
- ``lccc``    - the LCCC / CDial-GPT corpus as published: a JSON list of dialogues, each a list of utterances
                word-segmented with spaces ("你 好 啊"), or a ``{"train": [...], "valid": [...]}`` object of such
                lists, or the tab-separated ``.txt`` variant (one dialogue per line). Segmentation spaces are
                removed where they split CJK text; real spaces in Latin text stay ("iPhone 15 好 用 吗" ->
                "iPhone 15好用吗").
- ``json`` / ``jsonl`` - any JSON array / JSON Lines file; ``field_path`` (dotted, ``*`` fans out over a list,
                numbers index a list, e.g. ``data.*.question`` or ``messages.0.content``) picks the question.
- ``chatgpt`` - a ChatGPT export (``conversations.json``, the export folder or its ``.zip``): per conversation
                the path from the root to ``current_node``, without hidden, system and tool messages and
                without non-text parts.
- ``wechat``  - a WeChat export in the sharegpt variant of seed 003 (留痕/WeChatMsg "AI训练" JSON): one folder
                per contact holding ``*_train.json`` / ``*_dev.json`` lists of ``{"conversations": [{role,
                content}]}``. Pass the export root, one contact folder or one file.

Every importer returns the questions (deduplicated, in first-seen order) and, where the source has them, the
dialogues (alternating user/assistant, starting with the user) for multi-turn generation. Files may be UTF-8,
UTF-8 with BOM or GBK (see :mod:`emotune.data.textio`). Bad lines/items are reported with file, line and field and do
not stop the good ones unless ``strict``.
"""

from __future__ import annotations

import itertools
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

from emotune.data.records import Message
from emotune.data.textio import (
    ItemError,
    JSONSyntaxError,
    ReadReport,
    TextWindow,
    decode_bytes,
    iter_json_array,
    iter_jsonl,
    open_text,
)
from emotune.errors import InvalidInput

QuestionFormat = Literal["lines", "lccc", "json", "jsonl", "chatgpt", "wechat"]
QUESTION_FORMATS: tuple[str, ...] = get_args(QuestionFormat)

# A longer "question" is a pasted document, not a seed question.
DEFAULT_MAX_CHARS = 1000

Dialogue = list[Message]


@dataclass
class ImportedQuestions:
    """Questions in first-seen order without duplicates, dialogues for multi-turn generation, and what was
    skipped (``report.errors``, each with file and line)."""

    questions: list[str]
    dialogues: list[Dialogue]
    report: ReadReport
    duplicates: int = 0
    # The import stopped at EMOTUNE_IMPORT_MAX_QUESTIONS (not at the caller's limit): the rest was not read.
    capped: bool = False


@dataclass
class _Collector:
    """Gathers questions (deduplicated on whitespace- and case-insensitive text) and dialogues."""

    max_chars: int
    report: ReadReport
    limit: int | None = None
    cap: int | None = None
    questions: list[str] = field(default_factory=list)
    dialogues: list[Dialogue] = field(default_factory=list)
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {self.limit}", field="limit")
        if self.cap is not None and (self.limit is None or self.limit > self.cap):
            self.limit, self.capped_by = self.cap, True  # memory stays bounded whatever the file's size
        else:
            self.capped_by = False

    def dialogue(self, dialogue: Dialogue) -> None:
        if self.limit is None or len(self.dialogues) < self.limit:
            self.dialogues.append(dialogue)

    def question(self, text: str, line: int, field_name: str | None = None, *, strict: bool,
                 file: str | None = None) -> None:
        text = text.strip()
        if not text:
            return
        if len(text) > self.max_chars:
            self.report.fail(line, f"question is {len(text)} characters long (max {self.max_chars})", field_name,
                             strict=strict, file=file)
            return
        key = " ".join(text.split()).casefold()
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        self.questions.append(text)

    @property
    def full(self) -> bool:
        """Enough questions: readers stop early (a corpus like LCCC-base holds millions of dialogues)."""
        return self.limit is not None and len(self.questions) >= self.limit

    def result(self) -> ImportedQuestions:
        return ImportedQuestions(self.questions, self.dialogues, self.report, self.duplicates,
                                 capped=self.capped_by and self.full)




def _indexed(index: int, field_name: str | None) -> str:
    """``[3].mapping``: the item's index names it even in a minified one-line file."""
    return f"[{index}].{field_name}" if field_name else f"[{index}]"


def _dialogue(turns: Iterable[tuple[str, str]]) -> Dialogue:
    """Alternating user/assistant messages: consecutive messages of one speaker are joined by a newline (people
    send several short messages in a row), leading assistant messages are dropped, empty ones skipped."""
    merged: list[list[str]] = []
    for role, content in turns:
        content = content.strip()
        if not content or (role == "assistant" and not merged):
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1] += f"\n{content}"
        else:
            merged.append([role, content])
    return [Message(role=role, content=content) for role, content in merged]


def _take(collector: _Collector, dialogue: Dialogue, line: int, *, all_turns: bool, strict: bool,
          file: str | None = None) -> None:
    """The opening user message (or every user message) as questions; dialogues of 2+ messages kept."""
    users = [m.content for m in dialogue if m.role == "user"]
    for text in users if all_turns else users[:1]:
        collector.question(text, line, strict=strict, file=file)
    if len(dialogue) >= 2:
        collector.dialogue(dialogue)


# ------------------------------------------------------------------------------------------------ lines


def _import_lines(text: TextWindow, collector: _Collector, *, strict: bool, **_: Any) -> None:
    text.peek()
    for number, line in enumerate(text.lines(), start=text.line()):
        if line.strip():
            collector.report.read += 1
            collector.question(line, number, strict=strict)
            if collector.full:
                break


# ------------------------------------------------------------------------------------------------- lccc

_CJK = (r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
        r"\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\u2014\u2018\u2019\u201c\u201d\u2026\u00b7"
        r"\u2600-\u27bf\U0001f000-\U0001faff")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))


def _segmentation_space(left: str, right: str) -> bool:
    """Whether the space between two tokens is segmentation (drop it) rather than a real space (keep it)."""
    if _CJK_CHAR.match(left[-1]) or _CJK_CHAR.match(right[0]):
        return True  # CJK text, full-width punctuation or emoji on either side
    if len(left) == 1 and len(right) == 1 and left in _PRINTABLE_ASCII and right in _PRINTABLE_ASCII:
        return True  # character-level segmentation of Latin/digits: "2 1 万", "R a p", ". . ."
    # Latin text has no space before these ("world , 你" -> "world,你"); before "." only when it ends a sentence.
    return right[0] in ",!?;:" or (right[0] == "." and not right[1:2].isalnum())


def unsegment(text: str) -> str:
    """Undo LCCC's word segmentation: "你 好 啊" -> "你好啊", "iPhone 15 好 用 吗" -> "iPhone 15好用吗"."""
    tokens = text.split()
    if not tokens:
        return ""
    parts = [tokens[0]]
    for left, right in itertools.pairwise(tokens):
        if not _segmentation_space(left, right):
            parts.append(" ")
        parts.append(right)
    return "".join(parts)


def _lccc_dialogue(collector: _Collector, utterances: Any, line: int, where: str, *, all_turns: bool,
                   strict: bool) -> None:
    if not (isinstance(utterances, list) and utterances and all(isinstance(u, str) for u in utterances)):
        collector.report.fail(line, "expected a dialogue: a non-empty list of utterance strings", where or None,
                              strict=strict)
        return
    roles = ("user", "assistant")
    dialogue = _dialogue((roles[i % 2], unsegment(u)) for i, u in enumerate(utterances))
    _take(collector, dialogue, line, all_turns=all_turns, strict=strict)


def _import_lccc(text: TextWindow, collector: _Collector, *, strict: bool, all_turns: bool, **_: Any) -> None:
    report = collector.report
    start = text.peek()
    if start == "[":
        for index, (line, utterances) in enumerate(iter_json_array(text, report, strict=strict)):
            _lccc_dialogue(collector, utterances, line, f"[{index}]", all_turns=all_turns, strict=strict)
            if collector.full:
                break
    elif start == "{":  # {"train": [...], "valid": [...], "test": [...]}, read dialogue by dialogue
        try:
            for split in text.members():
                line = text.line()
                if text.peek() != "[":
                    found = text.value()
                    report.fail(line, f"expected a list of dialogues, found {type(found).__name__}", split,
                                strict=strict)
                    continue
                for index in text.elements():
                    line = text.line()
                    utterances = text.value()
                    report.read += 1
                    _lccc_dialogue(collector, utterances, line, f"{split}[{index}]", all_turns=all_turns,
                                   strict=strict)
                    if collector.full:
                        return
        except JSONSyntaxError as exc:
            report.fail(exc.line, exc.describe(), strict=strict)
    else:  # CDial-GPT's toy_train.txt: one dialogue per line, utterances separated by tabs
        for number, line in enumerate(text.lines(), start=text.line()):
            if line.strip():
                report.read += 1
                _lccc_dialogue(collector, line.split("\t"), number, "", all_turns=all_turns, strict=strict)
                if collector.full:
                    break


# ------------------------------------------------------------------------------------------- json / jsonl


def _parse_path(field_path: str) -> list[str]:
    parts = field_path.split(".")
    if not field_path or any(not part for part in parts):
        raise InvalidInput(f"bad field path {field_path!r}: use dotted names like data.*.question",
                           field="field_path")
    return parts


def _resolve(value: Any, parts: list[str], where: str = "") -> Iterator[tuple[str, Any]]:
    """``(location, value)`` pairs at a dotted path; ``*`` fans out over a list, a number indexes one. Where the
    path does not fit, the value is an :class:`ItemError`, so one bad element does not hide its siblings."""
    if not parts:
        yield where, value
        return
    part, rest = parts[0], parts[1:]
    if isinstance(value, list):
        if part == "*":
            for index, element in enumerate(value):
                yield from _resolve(element, rest, f"{where}[{index}]")
        elif not part.isdigit():
            yield where, ItemError(f"found a list where the path expects a key {part!r} (use * or an index)")
        elif int(part) >= len(value):
            yield f"{where}[{part}]", ItemError(f"list has {len(value)} element(s), no index {part}")
        else:
            yield from _resolve(value[int(part)], rest, f"{where}[{part}]")
    elif not isinstance(value, dict):
        yield where, ItemError(f"found {type(value).__name__} where the path expects an object")
    elif part not in value:
        yield f"{where}.{part}".lstrip("."), ItemError("field missing")
    else:
        yield from _resolve(value[part], rest, f"{where}.{part}".lstrip("."))


def _stream_resolve(text: TextWindow, parts: list[str], where: str = "") -> Iterator[tuple[int, str, Any]]:
    """:func:`_resolve` on the document being read: ``(line, location, value)``, building only the values at the
    path (a ``{"data": [...]}`` file of any size is read item by item)."""
    line = text.line()
    if not parts:
        yield line, where, text.value()
        return
    part, rest = parts[0], parts[1:]
    start = text.peek()
    if start == "[" and part == "*":
        for index in text.elements():
            yield from _stream_resolve(text, rest, f"{where}[{index}]")
    elif start == "[" and not part.isdigit():
        text.skip()
        yield line, where, ItemError(f"found a list where the path expects a key {part!r} (use * or an index)")
    elif start == "[":
        count = 0
        for index in text.elements():
            count += 1
            if index == int(part):
                yield from _stream_resolve(text, rest, f"{where}[{part}]")
            else:
                text.skip()
        if int(part) >= count:
            yield line, f"{where}[{part}]", ItemError(f"list has {count} element(s), no index {part}")
    elif start == "{":
        found = False
        for key in text.members():
            if key == part and not found:
                found = True
                yield from _stream_resolve(text, rest, f"{where}.{part}".lstrip("."))
            else:
                text.skip()
        if not found:
            yield line, f"{where}.{part}".lstrip("."), ItemError("field missing")
    else:
        value = text.value()
        yield line, where, ItemError(f"found {type(value).__name__} where the path expects an object")


def _question_found(collector: _Collector, found: Any, where: str, line: int, *, strict: bool) -> None:
    if isinstance(found, str):
        collector.question(found, line, where or None, strict=strict)
    else:
        message = str(found) if isinstance(found, ItemError) else (
            f"expected text, found {'nothing' if found is None else type(found).__name__}")
        collector.report.fail(line, message, where or None, strict=strict)


def _questions_at(collector: _Collector, value: Any, parts: list[str], line: int, *, strict: bool,
                  prefix: str = "") -> None:
    for where, found in _resolve(value, parts, prefix):
        _question_found(collector, found, where, line, strict=strict)


def _import_json(text: TextWindow, collector: _Collector, *, strict: bool, field_path: str | None, jsonl: bool,
                 **_: Any) -> None:
    if not field_path:
        raise InvalidInput("the json/jsonl importer needs a field path, e.g. 'question' or 'data.*.q'",
                           field="field_path")
    parts = _parse_path(field_path)
    report = collector.report
    if jsonl:
        for line, item in iter_jsonl(text, report, strict=strict):
            _questions_at(collector, item, parts, line, strict=strict)
            if collector.full:
                break
    elif text.peek() == "[":
        for index, (line, item) in enumerate(iter_json_array(text, report, strict=strict)):
            _questions_at(collector, item, parts, line, strict=strict, prefix=f"[{index}]")
            if collector.full:
                break
    else:  # one JSON object; the path starts at its root
        report.read += 1
        try:
            for line, where, found in _stream_resolve(text, parts):
                _question_found(collector, found, where, line, strict=strict)
                if collector.full:
                    return
            if text.peek():
                report.fail(text.line(), "broken JSON: Extra data after the document", strict=strict)
        except JSONSyntaxError as exc:
            report.fail(exc.line, exc.describe(), strict=strict)


# ------------------------------------------------------------------------------------------------ chatgpt


def chatgpt_role(message: dict[str, Any]) -> str | None:
    """``user`` / ``assistant`` for a message shown in the chat; ``None`` for hidden, system and tool ones."""
    role = (message.get("author") or {}).get("role")
    metadata = message.get("metadata") or {}
    if role not in ("user", "assistant"):
        return None
    if metadata.get("is_visually_hidden_from_conversation") or metadata.get("is_user_system_message"):
        return None
    if message.get("recipient", "all") != "all":  # the assistant calling a tool (browser, python, ...)
        return None
    return role


def _chatgpt_turn(message: dict[str, Any]) -> tuple[str, str] | None:
    """(role, visible text) of a user/assistant message; ``None`` for hidden, system, tool, non-text ones."""
    role = chatgpt_role(message)
    if role is None:
        return None
    content = message.get("content") or {}
    if content.get("content_type") not in ("text", "multimodal_text"):
        return None
    text = "\n".join(part for part in content.get("parts") or [] if isinstance(part, str)).strip()
    return (role, text) if text else None


def chatgpt_path(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages from the root to ``current_node`` (the branch the user last saw), oldest first."""
    mapping = conversation.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise ItemError("expected an object of nodes", "mapping")
    node_id = conversation.get("current_node")
    if node_id not in mapping:
        raise ItemError(f"node {node_id!r} is not in mapping", "current_node")
    path: list[dict[str, Any]] = []
    seen: set[str] = set()
    while node_id is not None:
        if node_id in seen:
            raise ItemError(f"parent links loop at node {node_id!r}", f"mapping.{node_id}.parent")
        if node_id not in mapping:
            raise ItemError(f"parent node {node_id!r} is missing", "mapping")
        seen.add(node_id)
        node = mapping[node_id]
        if not isinstance(node, dict):
            raise ItemError("expected a node object", f"mapping.{node_id}")
        if isinstance(node.get("message"), dict):
            path.append(node["message"])
        node_id = node.get("parent")
    return path[::-1]


def _import_chatgpt(text: TextWindow, collector: _Collector, *, strict: bool, all_turns: bool, **_: Any) -> None:
    for index, (line, conversation) in enumerate(iter_json_array(text, collector.report, strict=strict)):
        try:
            if not isinstance(conversation, dict):
                raise ItemError(f"expected a conversation object, found {type(conversation).__name__}")
            path = chatgpt_path(conversation)
        except ItemError as exc:
            collector.report.fail(line, str(exc), _indexed(index, exc.field), strict=strict)
            continue
        dialogue = _dialogue(turn for turn in map(_chatgpt_turn, path) if turn)
        _take(collector, dialogue, line, all_turns=all_turns, strict=strict)
        if collector.full:
            break


@contextmanager
def _chatgpt_export(path: Path, max_member_bytes: int) -> Iterator[tuple[str | TextIO, str]]:
    """(text, source name) of ``conversations.json`` given the file, the export folder or the export zip: a file
    is read as a stream, a zip member whole (up to ``max_member_bytes``)."""
    if path.is_dir():
        path = path / "conversations.json"
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "conversations.json"]
                if not names:
                    raise InvalidInput("no conversations.json in this ChatGPT export", file=str(path))
                source = f"{path}!{names[0]}"
                text = decode_bytes(read_zip_member(archive, names[0], max_member_bytes, source), source)
        except zipfile.BadZipFile as exc:
            raise InvalidInput(f"not a readable zip archive: {exc}", file=str(path)) from None
        yield text, source
        return
    with open_text(path) as text:
        yield text, str(path)


def read_zip_member(archive: zipfile.ZipFile, name: str, max_bytes: int, source: str) -> bytes:
    """One member's bytes, refused unread when it declares more than ``max_bytes`` and cut off when it inflates
    to more than it declared: a zip bomb costs neither the memory nor the time."""
    declared = archive.getinfo(name).file_size

    def refused(size: str) -> InvalidInput:
        return InvalidInput(f"the archive member inflates to {size} bytes, over the {max_bytes} byte limit "
                            "(EMOTUNE_IMPORT_MAX_ZIP_MEMBER_BYTES): refused as a possible zip bomb", file=source)

    if declared > max_bytes:
        raise refused(str(declared))
    with archive.open(name) as member:
        data = member.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise refused(f"more than {max_bytes}")
    return data


# ------------------------------------------------------------------------------------------------- wechat

_WECHAT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
# Placeholders WeChat exporters write for what is not text; emoji codes like "[玫瑰]" are kept.
_WECHAT_MEDIA = re.compile(r"^\[(图片|语音|视频|动画表情|表情|文件|位置|链接|名片|红包|转账|语音通话|视频通话|"
                           r"聊天记录|小程序|音乐|Photo|Voice|Video|Sticker|File|Location|Link)\]$")


def _wechat_turns(item: Any) -> list[tuple[str, str]]:
    entry = item if isinstance(item, dict) else None
    if entry is None:
        raise ItemError(f"expected a conversation object, found {type(item).__name__}")
    key = "conversations" if "conversations" in entry else "messages"
    messages = entry.get(key)
    if not isinstance(messages, list):
        raise ItemError("expected a list of messages", key)
    turns = []
    for index, message in enumerate(messages):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise ItemError("expected a message object", where)
        role_key, content_key = ("role", "content") if "role" in message else ("from", "value")
        role = message.get(role_key)
        if role == "system":
            continue
        if role not in _WECHAT_ROLES:
            raise ItemError(f"unknown role {role!r} (expected user/assistant)", f"{where}.{role_key}")
        content = message.get(content_key)
        if not isinstance(content, str):
            raise ItemError("expected text", f"{where}.{content_key}")
        if not _WECHAT_MEDIA.match(content.strip()):
            turns.append((_WECHAT_ROLES[role], content))
    return turns


def _import_wechat(text: TextWindow, collector: _Collector, *, strict: bool, all_turns: bool, source: str,
                   **_: Any) -> None:
    report = ReadReport(source)
    for index, (line, item) in enumerate(iter_json_array(text, report, strict=strict)):
        try:
            dialogue = _dialogue(_wechat_turns(item))
        except ItemError as exc:
            report.fail(line, str(exc), _indexed(index, exc.field), strict=strict)
            continue
        _take(collector, dialogue, line, all_turns=all_turns, strict=strict, file=source)
        if collector.full:
            break
    collector.report.absorb(report)


def _wechat_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise InvalidInput("no .json files in this WeChat export folder", file=str(path))
    return files


# ------------------------------------------------------------------------------------------------- entry

_IMPORTERS = {
    "lines": _import_lines,
    "lccc": _import_lccc,
    "json": lambda text, collector, **kw: _import_json(text, collector, jsonl=False, **kw),
    "jsonl": lambda text, collector, **kw: _import_json(text, collector, jsonl=True, **kw),
    "chatgpt": _import_chatgpt,
    "wechat": _import_wechat,
}


def _check_format(format: str) -> None:
    if format not in _IMPORTERS:
        raise InvalidInput(f"unknown question format {format!r}; known: {', '.join(QUESTION_FORMATS)}",
                           field="format")


def _max_questions(max_questions: int | None) -> int:
    if max_questions is None:
        from emotune.settings import Settings

        max_questions = Settings().import_max_questions
    return max_questions


def parse_questions(text: str | TextIO, format: QuestionFormat, *, source: str = "<questions>",
                    field_path: str | None = None, strict: bool = False, all_turns: bool = False,
                    max_chars: int = DEFAULT_MAX_CHARS, limit: int | None = None,
                    max_questions: int | None = None) -> ImportedQuestions:
    """Questions from one document, already decoded (e.g. an upload) or a text stream (read in bounded memory);
    see :func:`import_questions`."""
    _check_format(format)
    collector = _Collector(max_chars, ReadReport(source), limit, _max_questions(max_questions))
    _IMPORTERS[format](TextWindow(text, source), collector, strict=strict, all_turns=all_turns,
                       field_path=field_path, source=source)
    return collector.result()


def detect_format(path: str | Path) -> QuestionFormat:
    """Guess the format from the path and the first bytes: folder -> wechat (or chatgpt if it holds
    conversations.json), ``.zip``/``conversations.json`` -> chatgpt, ``.jsonl`` -> jsonl, a JSON list of string
    lists -> lccc, other ``.json`` -> json, anything else -> lines."""
    path = Path(path)
    if path.is_dir():
        return "chatgpt" if (path / "conversations.json").is_file() else "wechat"
    name = path.name.lower()
    if name.endswith(".zip") or name == "conversations.json":
        return "chatgpt"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json"):
        with path.open("rb") as file:  # the head is enough, a corpus can be gigabytes
            head = re.sub(r"\s+", "", file.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff"))
        if head.startswith(('[["', '{"train":[[')):
            return "lccc"
        if '"conversations":[{' in head and ('"role"' in head or '"from"' in head):
            return "wechat"
        return "json"
    return "lines"


def import_questions(path: str | Path, format: QuestionFormat | None = None, field_path: str | None = None,
                     strict: bool = False, *, all_turns: bool = False, max_chars: int = DEFAULT_MAX_CHARS,
                     limit: int | None = None, max_zip_member_bytes: int | None = None,
                     max_questions: int | None = None) -> ImportedQuestions:
    """Import seed questions (and dialogues) from ``path``.

    ``format`` defaults to :func:`detect_format`. ``field_path`` is required for json/jsonl. By default only the
    opening user message of each dialogue becomes a question (later turns lean on their context); ``all_turns``
    takes every user message. Bad lines are in ``result.report.errors``; ``strict`` raises on the first one.
    ``limit`` stops reading once that many questions are collected (a few thousand seeds from a huge corpus).
    Files are read as streams (JSON arrays item by item, JSON Lines and text line by line), so reading costs a
    window of the file whatever its size; what is kept is at most ``max_questions`` questions and as many dialogues
    (default: ``EMOTUNE_IMPORT_MAX_QUESTIONS``, which also lowers a bigger ``limit``; ``result.capped`` says it
    stopped the reading).
    A file inside a zip is read up to ``max_zip_member_bytes`` (default: ``EMOTUNE_IMPORT_MAX_ZIP_MEMBER_BYTES``).
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInput("file not found", file=str(path))
    format = format or detect_format(path)
    _check_format(format)
    max_questions = _max_questions(max_questions)
    options = {"field_path": field_path, "strict": strict, "all_turns": all_turns, "max_chars": max_chars,
               "limit": limit, "max_questions": max_questions}
    if format == "chatgpt":
        if max_zip_member_bytes is None:
            from emotune.settings import Settings

            max_zip_member_bytes = Settings().import_max_zip_member_bytes
        with _chatgpt_export(path, max_zip_member_bytes) as (text, source):
            return parse_questions(text, format, source=source, **options)
    if format == "wechat":
        collector = _Collector(max_chars, ReadReport(str(path)), limit, max_questions)
        for file in _wechat_files(path):
            if collector.full:
                break
            with open_text(file) as text:
                _import_wechat(TextWindow(text, str(file)), collector, strict=strict, all_turns=all_turns,
                               source=str(file))
        return collector.result()
    if path.is_dir():
        raise InvalidInput(f"the {format} importer reads a file, this is a folder", file=str(path))
    with open_text(path) as text:
        return parse_questions(text, format, source=str(path), **options)
