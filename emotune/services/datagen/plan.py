"""What to ask the teacher: the work items of a job, each with a stable id, in a fixed order.

Four modes:
- ``single``: seed question -> styled answer. The teacher sees the style's system prompt and its few-shot turns
  as real chat turns (so a plain base model behind a chat template continues the pattern too).
- ``multi``: a seed question or a dialogue fragment (WeChat / ChatGPT export) -> a coherent dialogue of 2-3 more
  turns in the style, returned as a JSON list (seed 003); unparsable output is a retryable error.
- ``combinatorial``: recipients x scenes x styles (seed 002), minus the pairs the compatibility filter excludes,
  with a random reference sentence and a random extra instruction per item for variety. The *training* input is
  a natural request ("帮我给妈妈写一条春节祝福"), never the generation prompt (seed 002 explains why).

- ``context``: a voice job's samples (a person's real replies with the messages before them, ``docs/voice.md``) ->
  the same samples with a short opening by the other side, written by the teacher, so that a fragment cut out of a
  longer chat reads coherently (seed 003's step). The teacher writes only the opening: every message of the
  sample, the person's replies above all, stays as it was.

Randomness comes from ``Random(f"{seed}:{item_id}")``: the same job plans the same items with the same prompts,
which is what makes a resumed run equal to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Literal, get_args

from emotune.data.records import Message, Record, record_id
from emotune.data.styles import Style, StylesDocument
from emotune.services.datagen.teachers import FailureKind, TeacherError

Mode = Literal["single", "multi", "combinatorial", "context"]
MODES: tuple[str, ...] = get_args(Mode)
Expects = Literal["reply", "dialogue", "opening"]

# Generation prompts by language (styles declare theirs; anything but zh uses en).
MULTI_TURN_TASK = {
    "zh": (
        "你的任务：编写一段符合上述风格的多轮对话。{task}\n"
        "要求：\n"
        "1. 对话以 user 开始、以 assistant 结束，user 与 assistant 交替发言，一共 2 到 3 轮（一问一答为一轮）。\n"
        "2. assistant 的每一句话都要保持上述风格；user 要像真人日常聊天那样简短自然。\n"
        "3. 只输出一个 JSON 列表，每一项形如 {{\"role\": \"user\", \"content\": \"...\"}}，不要输出任何其他内容。"
    ),
    "en": (
        "Your task: write a multi-turn dialogue in the style above. {task}\n"
        "Rules:\n"
        "1. Start with user, end with assistant, alternate turns, 2 to 3 rounds in total.\n"
        "2. Every assistant line keeps the style; the user talks like a real person in a casual chat.\n"
        "3. Output only a JSON list of objects like {{\"role\": \"user\", \"content\": \"...\"}}, nothing else."
    ),
}
MULTI_FROM_QUESTION = {"zh": "对话的第一句（user）是：「{question}」", "en": "The first user line is: \"{question}\""}
MULTI_FROM_FRAGMENT = {
    "zh": "下面是一段不完整的聊天片段，请补全开头使它连贯，再续写 2 到 3 轮：\n{fragment}",
    "en": "Here is an incomplete chat fragment; make its opening coherent, then continue it for 2 to 3 rounds:\n"
          "{fragment}",
}
CONTEXT_TASK = {
    "zh": (
        "下面是从一段更长的聊天里截出来的片段，开头缺了前文，读起来可能没头没尾。「我」的话一个字都不能改。\n"
        "请写出片段之前「对方」说的 1 到 2 句话，让这段聊天读起来自然、连贯：\n"
        "1. 不要改写、重复或续写片段里的任何一句，只写片段之前对方的话；\n"
        "2. 像真人聊天那样简短、口语；\n"
        "3. 只输出一个 JSON 字符串列表，例如 [\"在吗\", \"周末有空不\"]，不要输出任何其他内容。\n\n"
        "片段：\n{fragment}"
    ),
    "en": (
        "Below is a fragment cut out of a longer chat: its start is missing, so it may read out of the blue. Do not "
        "change a word of what \"me\" says.\n"
        "Write the 1 or 2 lines \"them\" said just before the fragment, so that the chat reads naturally:\n"
        "1. Do not rewrite, repeat or continue any line of the fragment; write only their lines before it.\n"
        "2. Short and casual, as people chat.\n"
        "3. Output only a JSON list of strings, e.g. [\"hey\", \"free this weekend?\"], nothing else.\n\n"
        "Fragment:\n{fragment}"
    ),
}
CONTEXT_SPEAKERS = {"zh": {"user": "对方", "assistant": "我"}, "en": {"user": "them", "assistant": "me"}}
OPENING_MAX_LINES = 2
OPENING_MAX_CHARS = 60  # per line: an opening is a chat message, not a story
STYLE_EXAMPLES = {"zh": "风格示例：", "en": "Style examples:"}
COMBINATORIAL_TASK = {
    "zh": (
        "请为「{who}」写一条{scene}祝福{scene_note}。\n"
        "要求：不超过 {max_chars} 个字；根据对象的身份选择合适的语气（尊敬、亲近或诙谐）。{extra}\n"
        "{reference}"
        "请直接返回祝福语正文，不要标题，不要解释，不要说任何其他的话。"
    ),
    "en": (
        "Write a {scene} message for {who}{scene_note}.\n"
        "Rules: at most {max_chars} characters; pick the tone that suits who they are (respectful, close or "
        "playful). {extra}\n"
        "{reference}"
        "Reply with the message text only: no title, no explanation, nothing else."
    ),
}
COMBINATORIAL_REFERENCE = {
    "zh": "参考这句话的造句风格（只学风格，不要照抄）：{text}\n",
    "en": "Imitate the phrasing style of this sentence (style only, do not copy it): {text}\n",
}
# What a real user would type; the training input is one of these, picked per item.
NATURAL_REQUESTS = {
    "zh": ("帮我给{who}写一条{scene}祝福", "我想送{who}{scene}祝福", "祝{who}{scene}",
           "{scene}到了，想给{who}发条祝福，帮我写一下"),
    "en": ("Write a {scene} message for {who}", "I want to send {who} a {scene} wish",
           "Help me wish {who} a happy {scene}"),
}

PROMPT_VERSION = "datagen-v1-" + hashlib.sha256(json.dumps(
    [MULTI_TURN_TASK, MULTI_FROM_QUESTION, MULTI_FROM_FRAGMENT, CONTEXT_TASK, CONTEXT_SPEAKERS, STYLE_EXAMPLES, COMBINATORIAL_TASK,
     COMBINATORIAL_REFERENCE, NATURAL_REQUESTS], ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:8]


def _lang(style: Style, table: dict[str, Any]) -> Any:
    return table.get(style.language, table["en"])


@dataclass(frozen=True)
class WorkItem:
    id: str
    style: str
    mode: str
    variant: int
    # The messages sent to the teacher.
    prompt: list[dict[str, str]]
    # The training conversation before the teacher's reply (system + user), for single/combinatorial.
    context: list[Message]
    expects: Expects = "reply"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    # mode context: the sample the teacher writes an opening for (published as it is when it writes none)
    sample: Record | None = None


@dataclass
class Plan:
    items: list[WorkItem]
    # style -> reason -> count of combinations not generated ("incompatible", "duplicate")
    skipped: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return len(self.items)

    def skipped_count(self, style: str | None = None) -> int:
        styles = [style] if style else list(self.skipped)
        return sum(sum(self.skipped.get(s, {}).values()) for s in styles)


def _few_shot_messages(style: Style) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for turn in style.few_shot:
        turns += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
    return turns


def _style_examples(style: Style) -> str:
    if not style.few_shot:
        return ""
    lines = [_lang(style, STYLE_EXAMPLES)]
    for turn in style.few_shot:
        lines += [f"user: {turn.user}", f"assistant: {turn.assistant}"]
    return "\n\n" + "\n".join(lines)


def _single(style: Style, question: str, variant: int, source: str) -> WorkItem:
    prompt = [{"role": "system", "content": style.system_prompt}, *_few_shot_messages(style),
              {"role": "user", "content": question}]
    context = [Message(role="system", content=style.serving_prompt), Message(role="user", content=question)]
    return WorkItem(record_id(style.name, question, "single", variant), style.name, "single", variant, prompt,
                    context, source=source, meta={"question": question})


def _multi(style: Style, opening: str | list[Message], variant: int, source: str) -> WorkItem:
    if isinstance(opening, str):
        task = _lang(style, MULTI_FROM_QUESTION).format(question=opening)
        identity, meta = opening, {"question": opening}
    else:
        fragment = json.dumps([m.model_dump() for m in opening], ensure_ascii=False)
        task = _lang(style, MULTI_FROM_FRAGMENT).format(fragment=fragment)
        identity, meta = fragment, {"fragment": [m.model_dump() for m in opening]}
    prompt = [{"role": "system", "content": style.system_prompt + _style_examples(style)},
              {"role": "user", "content": _lang(style, MULTI_TURN_TASK).format(task=task)}]
    context = [Message(role="system", content=style.serving_prompt)]
    return WorkItem(record_id(style.name, identity, "multi", variant), style.name, "multi", variant, prompt,
                    context, expects="dialogue", source=source, meta=meta)


def fragment_of(sample: Record) -> list[Message]:
    """What a context item's teacher reads and leaves as it is: the sample without its system message."""
    return [m for m in sample.messages if m.role != "system"]


def _context(style: Style, sample: Record, source: str) -> WorkItem:
    fragment = fragment_of(sample)
    speakers = _lang(style, CONTEXT_SPEAKERS)
    colon = "：" if style.language == "zh" else ": "
    lines = "\n".join(f"{speakers[m.role]}{colon}{m.content}" for m in fragment)
    prompt = [{"role": "user", "content": _lang(style, CONTEXT_TASK).format(fragment=lines)}]
    system = [m for m in sample.messages if m.role == "system"][:1]
    return WorkItem(record_id(style.name, sample.id, "context"), style.name, "context", 0, prompt,
                    system or [Message(role="system", content=style.serving_prompt)], expects="opening",
                    source=sample.provenance.source or source, meta={**sample.meta, "source_record": sample.id},
                    sample=sample)


def _combinatorial(doc: StylesDocument, style: Style, seed: int, variants: int) -> tuple[list[WorkItem], int]:
    combo = doc.combinatorial
    assert combo is not None
    items: list[WorkItem] = []
    excluded = 0
    references = style.reference_texts or [t.assistant for t in style.few_shot]
    for recipient in combo.recipients:
        for scene in combo.scenes:
            if not combo.allowed(recipient.name, scene.name, style.name):
                excluded += variants
                continue
            who = recipient.mention or recipient.name
            for variant in range(variants):
                item_id = record_id(style.name, recipient.name, scene.name, "combinatorial", variant)
                rng = random.Random(f"{seed}:{item_id}")
                reference = rng.choice(references) if references else ""
                extra = rng.choice(combo.extra_instructions) if combo.extra_instructions else ""
                note = f"（{scene.description}）" if scene.description and style.language == "zh" else (
                    f" ({scene.description})" if scene.description else "")
                task = _lang(style, COMBINATORIAL_TASK).format(
                    who=who, scene=scene.name, scene_note=note, max_chars=style.length.max, extra=extra,
                    reference=_lang(style, COMBINATORIAL_REFERENCE).format(text=reference) if reference else "")
                request = rng.choice(_lang(style, NATURAL_REQUESTS)).format(who=who, scene=scene.name)
                prompt = [{"role": "system", "content": style.system_prompt}, {"role": "user", "content": task}]
                context = [Message(role="system", content=style.serving_prompt), Message(role="user", content=request)]
                items.append(WorkItem(item_id, style.name, "combinatorial", variant, prompt, context,
                                      source="combinatorial",
                                      meta={"recipient": recipient.name, "scene": scene.name,
                                            "reference": reference, "extra_instruction": extra}))
    return items, excluded


def build_plan(doc: StylesDocument, style_names: list[str], mode: str, *, questions: list[str],
               dialogues: list[list[Message]], variants: int, seed: int, source: str,
               samples: list[Record] = ()) -> Plan:
    """Every work item of a job, deduplicated by id, in a deterministic order (style, then input, variant)."""
    styles = [doc.get(name) for name in style_names] if style_names else list(doc.styles)
    items: list[WorkItem] = []
    skipped: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for style in styles:
        if mode == "combinatorial":
            style_items, excluded = _combinatorial(doc, style, seed, variants)
            if excluded:
                skipped[style.name]["incompatible"] += excluded
        elif mode == "context":
            style_items = [_context(style, sample, source) for sample in samples if sample.style in (None, style.name)]
        elif mode == "multi":
            openings: list[str | list[Message]] = list(dialogues) if dialogues else list(questions)
            style_items = [_multi(style, o, v, source) for o in openings for v in range(variants)]
        else:
            style_items = [_single(style, q, v, source) for q in questions for v in range(variants)]
        items.extend(style_items)
    unique: dict[str, WorkItem] = {}
    for item in items:
        if item.id in unique:
            skipped[item.style]["duplicate"] += 1
        else:
            unique[item.id] = item
    return Plan(list(unique.values()), {s: dict(r) for s, r in skipped.items()})


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_dialogue(text: str) -> list[Message]:
    """The JSON dialogue a multi-turn prompt asked for; anything else is a retryable ``malformed_output``."""

    def bad(why: str) -> TeacherError:
        return TeacherError("malformed_output", f"{why}: {text[:120]!r}", FailureKind.RETRYABLE)

    body = _FENCE.sub("", text.strip())
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise bad("no JSON list in the reply")
    try:
        value = json.loads(body[start:end + 1])
    except ValueError:
        raise bad("the JSON list does not parse") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise bad("expected a list of {role, content} objects")
    try:
        messages = [Message(role=m.get("role"), content=str(m.get("content", "")).strip()) for m in value]
    except ValueError:
        raise bad("a message has an unknown role") from None
    roles = [m.role for m in messages]
    if len(messages) < 2 or roles[0] != "user" or roles[-1] != "assistant":
        raise bad("the dialogue must start with user and end with assistant")
    if any(a == b for a, b in itertools.pairwise(roles)) or "system" in roles:
        raise bad("user and assistant must alternate")
    if any(not m.content for m in messages):
        raise bad("a message is empty")
    return messages


def parse_opening(text: str, fragment: list[Message]) -> list[str]:
    """The opening lines a context prompt asked for (1-2 short strings, none copied from the fragment); anything
    else is a retryable ``malformed_output``."""

    def bad(why: str) -> TeacherError:
        return TeacherError("malformed_output", f"{why}: {text[:120]!r}", FailureKind.RETRYABLE)

    body = _FENCE.sub("", text.strip())
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        raise bad("no JSON list in the reply")
    try:
        value = json.loads(body[start:end + 1])
    except ValueError:
        raise bad("the JSON list does not parse") from None
    if not isinstance(value, list) or not value or not all(isinstance(line, str) for line in value):
        raise bad("expected a non-empty list of strings")
    lines = [line.strip() for line in value]
    if len(lines) > OPENING_MAX_LINES or any(not line for line in lines):
        raise bad(f"expected 1 to {OPENING_MAX_LINES} non-empty lines")
    if any(len(line) > OPENING_MAX_CHARS for line in lines):
        raise bad(f"a line is longer than {OPENING_MAX_CHARS} characters")
    if any(_repeats(line, m.content) for line in lines for m in fragment):
        raise bad("a line repeats the fragment")
    return lines


def _letters(text: str) -> str:
    """Letters and digits only: punctuation, emoji and spaces do not make a copy new ("存一下！" is "存一下")."""
    return "".join(ch for ch in text if ch.isalnum())


def _repeats(line: str, said: str) -> bool:
    """``line`` copies ``said``: letter for letter, or they share a run of at least 4 characters that is most
    (60%) of ``line`` or all of ``said``. So a "好" said in the fragment does not forbid every opening with 好 in
    it, "你是不是又迟到了" may lead to "救命 我又迟到了", but "今天一定早睡！" may not lead to "知道啦～ 今天一定早睡🐶"."""
    mine, theirs = _letters(line), _letters(said)
    if not mine or mine == theirs:
        return mine == theirs
    run = SequenceMatcher(None, mine, theirs, autojunk=False).find_longest_match().size
    return run >= 4 and (run >= 0.6 * len(mine) or run == len(theirs))


def with_opening(opening: list[str], fragment: list[Message]) -> list[Message]:
    """The fragment after the other side's opening lines: one ``user`` turn (lines joined by a newline, as the
    cleaning merges one speaker's consecutive messages), merged into the fragment's first turn when that is
    theirs too."""
    text = "\n".join(opening)
    if fragment and fragment[0].role == "user":
        return [Message(role="user", content=f"{text}\n{fragment[0].content}"), *fragment[1:]]
    return [Message(role="user", content=text), *fragment]
