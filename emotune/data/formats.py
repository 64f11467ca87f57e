"""Converters between the internal :class:`~emotune.data.records.Record` and the dataset formats trainers read.

Formats (``DatasetFormat``):

- ``emotune``  - the internal record, one JSON object per line; lossless.
- ``xtuner``   - XTuner's ``conversation`` format: ``{"conversation": [{"system"?, "input", "output"}, ...]}``.
- ``alpaca``   - ``{"instruction", "input", "output", "system", "history": [[user, assistant], ...]}``
                 (LLaMA-Factory's alpaca layout, seed 001).
- ``sharegpt`` - ``{"conversations": [{"from": "human", "value": ...}, ...]}`` with configurable role tags
                 (:class:`ShareGPTTags`), e.g. the ``role``/``content`` variant WeChat exports use (seed 003).
- ``openai``   - OpenAI chat fine-tuning JSONL: ``{"messages": [{"role", "content"}, ...]}``, read by the same
                 rule as the upload checker (:class:`~emotune.data.chat_jsonl.OpenAIChatLine`).

What a foreign format cannot hold is lost on export and has to be supplied on import: the record id,
provenance and meta never survive; the style survives only with ``meta=True`` (written as top-level ``"id"`` and
``"style"`` keys, which XTuner and LLaMA-Factory ignore but a strict API such as OpenAI's upload may refuse).
Otherwise pass ``style=`` when importing. Each converter's docstring lists its own losses.

Importers name the file, the line and the field of a bad item (``data.json:12: conversation[1].output: ...``);
bad items are reported and skipped unless ``strict``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from emotune.data.chat_jsonl import OpenAIChatLine, validation_errors
from emotune.data.records import Message, Provenance, Record, dumps_records, record_id
from emotune.data.textio import ItemError, ReadReport, iter_json_items
from emotune.errors import InvalidInput

DatasetFormat = Literal["emotune", "xtuner", "alpaca", "sharegpt", "openai"]
DATASET_FORMATS: tuple[str, ...] = get_args(DatasetFormat)


@dataclass(frozen=True)
class ShareGPTTags:
    """Key and role names of a sharegpt-style file (LLaMA-Factory's ``columns.messages`` + ``tags``)."""

    messages_key: str = "conversations"
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    system_tag: str = "system"


SHAREGPT = ShareGPTTags()
# The same layout with OpenAI role names: LLaMA-Factory's "openai" variant and WeChat (留痕) exports.
SHAREGPT_ROLE_CONTENT = ShareGPTTags(role_tag="role", content_tag="content", user_tag="user",
                                     assistant_tag="assistant", system_tag="system")




@dataclass
class _Turn:
    system: str | None
    user: str
    assistant: str


def _turns(record: Record) -> list[_Turn]:
    """Split messages into turns: an optional system message, then user, then assistant, repeated.

    Training formats made of (input, output) pairs need exactly this shape; anything else (two user messages in a
    row, a conversation ending on the user) is refused with the offending message's index.
    """
    turns: list[_Turn] = []
    system: str | None = None
    user: str | None = None
    for index, message in enumerate(record.messages):
        where = f"messages[{index}].role"
        if message.role == "system":
            if user is not None or system is not None:
                raise InvalidInput("a system message must come before a user message and only once per turn",
                                   field=where, record=record.id)
            system = message.content
        elif message.role == "user":
            if user is not None:
                raise InvalidInput("two user messages in a row cannot become (input, output) turns",
                                   field=where, record=record.id)
            user = message.content
        else:
            if user is None:
                raise InvalidInput("an assistant message must answer a user message", field=where,
                                   record=record.id)
            turns.append(_Turn(system, user, message.content))
            system = user = None
    if user is not None or system is not None or not turns:
        raise InvalidInput("the conversation must end with an assistant reply", field="messages",
                           record=record.id)
    return turns


def _with_meta(item: dict[str, Any], record: Record, meta: bool) -> dict[str, Any]:
    return {**item, "id": record.id, "style": record.style} if meta else item


def _text(value: Any, field: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        found = "nothing" if value is None else type(value).__name__
        raise ItemError(f"expected text, found {found}", field)
    if required and not value.strip():
        raise ItemError("is empty", field)
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        found = "nothing" if value is None else type(value).__name__
        raise ItemError(f"expected a list, found {found}", field)
    return value


def _object(value: Any, field: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ItemError(f"expected a JSON object, found {type(value).__name__}", field)
    return value


# ---------------------------------------------------------------------------------------------------- xtuner


def to_xtuner(record: Record, *, meta: bool = False) -> dict[str, Any]:
    """XTuner ``conversation`` item. Each system message is kept on the turn it precedes.

    Lost: id, style (unless ``meta``), provenance, meta. Needs user/assistant turns ending with the assistant.
    """
    conversation = []
    for turn in _turns(record):
        entry = {"system": turn.system} if turn.system is not None else {}
        conversation.append({**entry, "input": turn.user, "output": turn.assistant})
    return _with_meta({"conversation": conversation}, record, meta)


def _messages_from_xtuner(item: dict[str, Any]) -> tuple[list[Message], str | None]:
    """Messages of an XTuner item, and the style named by seed 002's ``style_name`` turn key, if any."""
    messages: list[Message] = []
    style_name = None
    turns = _list(item.get("conversation"), "conversation")
    if not turns:
        raise ItemError("has no turns", "conversation")
    for index, raw in enumerate(turns):
        where = f"conversation[{index}]"
        turn = _object(raw, where)
        system = _text(turn.get("system"), f"{where}.system", required=False)
        if system.strip():
            messages.append(Message(role="system", content=system))
        messages.append(Message(role="user", content=_text(turn.get("input"), f"{where}.input")))
        messages.append(Message(role="assistant", content=_text(turn.get("output"), f"{where}.output")))
        style_name = style_name or turn.get("style_name")
    return messages, style_name


# ---------------------------------------------------------------------------------------------------- alpaca


def to_alpaca(record: Record, *, meta: bool = False) -> dict[str, Any]:
    """Alpaca item: the last turn is instruction/output, earlier turns go to ``history`` as [user, assistant].

    Lost: id, style (unless ``meta``), provenance, meta. Only one system prompt (before the first turn) fits.
    ``input`` is always empty: on import, instruction and input are joined by a newline into one user message
    (what LLaMA-Factory does), so a split between them does not survive a round trip.
    """
    turns = _turns(record)
    if any(turn.system is not None for turn in turns[1:]):
        raise InvalidInput("alpaca holds one system prompt; this record has one inside the conversation",
                           field="messages", record=record.id)
    last = turns[-1]
    item = {"instruction": last.user, "input": "", "output": last.assistant, "system": turns[0].system or "",
            "history": [[turn.user, turn.assistant] for turn in turns[:-1]]}
    return _with_meta(item, record, meta)


def _messages_from_alpaca(item: dict[str, Any]) -> tuple[list[Message], None]:
    messages: list[Message] = []
    system = _text(item.get("system"), "system", required=False)
    if system.strip():
        messages.append(Message(role="system", content=system))
    history = item.get("history") or []
    for index, pair in enumerate(_list(history, "history")):
        where = f"history[{index}]"
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ItemError("expected a [user, assistant] pair", where)
        messages.append(Message(role="user", content=_text(pair[0], f"{where}[0]")))
        messages.append(Message(role="assistant", content=_text(pair[1], f"{where}[1]")))
    instruction = _text(item.get("instruction"), "instruction", required=False)
    query = _text(item.get("input"), "input", required=False)
    user = "\n".join(part for part in (instruction, query) if part.strip())
    if not user:
        raise ItemError("instruction and input are both empty", "instruction")
    messages.append(Message(role="user", content=user))
    messages.append(Message(role="assistant", content=_text(item.get("output"), "output")))
    return messages, None


# -------------------------------------------------------------------------------------------------- sharegpt


def to_sharegpt(record: Record, *, tags: ShareGPTTags = SHAREGPT, meta: bool = False) -> dict[str, Any]:
    """ShareGPT item; a system prompt becomes the first message with ``tags.system_tag`` (LLaMA-Factory reads
    that without a ``system`` column).

    Lost: id, style (unless ``meta``), provenance, meta. Only one system prompt (before the first turn) fits.
    """
    turns = _turns(record)
    if any(turn.system is not None for turn in turns[1:]):
        raise InvalidInput("sharegpt holds one system prompt; this record has one inside the conversation",
                           field="messages", record=record.id)

    def message(role_tag: str, content: str) -> dict[str, str]:
        return {tags.role_tag: role_tag, tags.content_tag: content}

    messages = [message(tags.system_tag, turns[0].system)] if turns[0].system is not None else []
    for turn in turns:
        messages += [message(tags.user_tag, turn.user), message(tags.assistant_tag, turn.assistant)]
    return _with_meta({tags.messages_key: messages}, record, meta)


def _messages_from_sharegpt(item: dict[str, Any], tags: ShareGPTTags) -> tuple[list[Message], None]:
    roles = {tags.user_tag: "user", tags.assistant_tag: "assistant", tags.system_tag: "system"}
    messages: list[Message] = []
    system = _text(item.get("system"), "system", required=False)
    if system.strip():
        messages.append(Message(role="system", content=system))
    raw_messages = _list(item.get(tags.messages_key), tags.messages_key)
    for index, raw in enumerate(raw_messages):
        where = f"{tags.messages_key}[{index}]"
        entry = _object(raw, where)
        tag = entry.get(tags.role_tag)
        if tag not in roles:
            known = ", ".join(repr(t) for t in roles)
            raise ItemError(f"unknown role {tag!r} (expected one of {known})", f"{where}.{tags.role_tag}")
        role = roles[tag]
        if role == "system" and index != 0:
            raise ItemError("a system message is only allowed first", f"{where}.{tags.role_tag}")
        messages.append(Message(role=role, content=_text(entry.get(tags.content_tag), f"{where}.{tags.content_tag}")))
    return messages, None


# ---------------------------------------------------------------------------------------------------- openai


def to_openai_chat(record: Record, *, meta: bool = False) -> dict[str, Any]:
    """OpenAI chat fine-tuning line. Messages map one to one (any order of roles).

    Lost: id, style (unless ``meta``; leave it off for files uploaded to OpenAI), provenance, meta.
    """
    messages = [{"role": m.role, "content": m.content} for m in record.messages]
    return _with_meta({"messages": messages}, record, meta)


def _messages_from_openai(item: dict[str, Any]) -> tuple[list[Message], None]:
    """The messages of a chat line, by the rule the upload checker applies (:class:`OpenAIChatLine`)."""
    line = OpenAIChatLine.model_validate(item)
    return [Message(role=m.role, content=m.text) for m in line.messages], None


# ------------------------------------------------------------------------------------------- whole datasets


def to_format(record: Record, fmt: DatasetFormat, *, meta: bool = False,
              tags: ShareGPTTags = SHAREGPT) -> dict[str, Any]:
    """One record as one item of ``fmt`` (see the module docstring for what each format loses)."""
    if fmt == "emotune":
        return record.model_dump(mode="json")
    if fmt == "xtuner":
        return to_xtuner(record, meta=meta)
    if fmt == "alpaca":
        return to_alpaca(record, meta=meta)
    if fmt == "sharegpt":
        return to_sharegpt(record, tags=tags, meta=meta)
    if fmt == "openai":
        return to_openai_chat(record, meta=meta)
    raise InvalidInput(f"unknown dataset format {fmt!r}; known: {', '.join(DATASET_FORMATS)}", field="format")


def dumps_dataset(records: Iterable[Record], fmt: DatasetFormat, *, meta: bool = False,
                  tags: ShareGPTTags = SHAREGPT, jsonl: bool | None = None) -> str:
    """Serialise records in ``fmt``. JSON Lines for ``emotune``/``openai`` by default, else one JSON array
    (what XTuner's ``load_dataset('json')`` and LLaMA-Factory read; both also read JSON Lines)."""
    if fmt == "emotune":
        return dumps_records(records)
    items = [to_format(record, fmt, meta=meta, tags=tags) for record in records]
    if jsonl if jsonl is not None else fmt == "openai":
        return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    return json.dumps(items, ensure_ascii=False, indent=2) + "\n"


def _item_parser(fmt: DatasetFormat, tags: ShareGPTTags) -> Callable[[dict[str, Any]], tuple[list[Message], Any]]:
    parsers: dict[str, Callable[[dict[str, Any]], tuple[list[Message], Any]]] = {
        "xtuner": _messages_from_xtuner,
        "alpaca": _messages_from_alpaca,
        "sharegpt": lambda item: _messages_from_sharegpt(item, tags),
        "openai": _messages_from_openai,
    }
    if fmt not in parsers:
        raise InvalidInput(f"unknown dataset format {fmt!r}; known: {', '.join(DATASET_FORMATS)}", field="format")
    return parsers[fmt]


def from_format(item: Any, fmt: DatasetFormat, *, style: str | None = None, source: str = "",
                tags: ShareGPTTags = SHAREGPT) -> Record:
    """One item of ``fmt`` as a record. The style is, in order: ``style``, the item's ``"style"`` key (written
    with ``meta=True``), seed 002's per-turn ``style_name`` (XTuner). The id is kept when the item has one, else
    derived from style and messages, so importing the same file twice gives the same ids.

    Raises :class:`InvalidInput` naming the field (without file/line: :func:`parse_dataset` adds them).
    """
    try:
        if fmt == "emotune":
            return Record.model_validate(item)
        entry = _object(item)
        messages, style_name = _item_parser(fmt, tags)(entry)
        style = style or entry.get("style") or style_name
        identity = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
        return Record(id=entry.get("id") or record_id(style, identity), style=style, messages=messages,
                      provenance=Provenance(teacher="import", source=source), meta={})
    except ItemError as exc:
        raise InvalidInput(str(exc), field=exc.field) from None
    except ValidationError as exc:
        message, field = validation_errors(exc)[0]
        raise InvalidInput(message, field=field) from None


def parse_dataset(text: str, fmt: DatasetFormat, *, source: str = "<dataset>", style: str | None = None,
                  tags: ShareGPTTags = SHAREGPT, strict: bool = False) -> tuple[list[Record], ReadReport]:
    """Read a dataset file (one JSON array or JSON Lines). A bad item is reported with its line and field and
    skipped, or raised at once when ``strict``."""
    if fmt != "emotune":
        _item_parser(fmt, tags)  # an unknown format fails before reading
    report = ReadReport(source)
    records: list[Record] = []
    for line, item in iter_json_items(text, report, strict=strict):
        try:
            records.append(from_format(item, fmt, style=style, source=f"{source}:{line}", tags=tags))
        except InvalidInput as exc:
            report.fail(line, exc.reason, exc.field, strict=strict)
            report.read -= 1
    return records, report


# ------------------------------------------------------------------------------------------- LLaMA-Factory

_LLAMAFACTORY_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")


def llamafactory_dataset_info(name: str, file: str, format: DatasetFormat,
                              tags: ShareGPTTags = SHAREGPT) -> dict[str, Any]:
    """A LLaMA-Factory ``dataset_info.json`` entry ``{name: {...}}`` for a file written by :func:`dumps_dataset`.

    ``alpaca`` maps prompt/query/response/system/history; ``sharegpt`` and ``openai`` use sharegpt formatting
    with the message key and role tags the file was written with. XTuner and emotune files are not a layout
    LLaMA-Factory reads: export as alpaca or sharegpt for it.
    """
    if format == "alpaca":
        entry = {"file_name": file, "formatting": "alpaca",
                 "columns": {"prompt": "instruction", "query": "input", "response": "output",
                             "system": "system", "history": "history"}}
    elif format in ("sharegpt", "openai"):
        tags = SHAREGPT_ROLE_CONTENT if format == "openai" else tags
        messages_key = "messages" if format == "openai" else tags.messages_key
        entry = {"file_name": file, "formatting": "sharegpt", "columns": {"messages": messages_key},
                 "tags": {key: value for key, value in asdict(tags).items() if key in _LLAMAFACTORY_TAGS}}
    else:
        raise InvalidInput(f"LLaMA-Factory cannot read the {format!r} layout; export as alpaca, sharegpt or "
                           "openai", field="format")
    return {name: entry}
