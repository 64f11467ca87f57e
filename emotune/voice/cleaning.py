"""From an export's conversations to training samples in the person's voice, every rule counted.

In order:

1. ``media`` / ``recalled`` / ``system`` / ``empty``: placeholders for what is not text (``[图片]``), recalled
   messages ("你撤回了一条消息") and system notices ("以下为新消息", 拍一拍) are dropped.
2. Personal data (``phone``, ``id_card``, ``email``, ``bank_card``): masked with a tag (``[手机号]``, ``[身份证号]``,
   ``[邮箱]``, ``[银行卡号]``; the default) or, with ``personal_data: drop``, the message is dropped. Bank-card
   numbers must pass the Luhn check and ID-card numbers carry a birth date, so order numbers are left alone.
3. Sessions: a conversation with timestamps is split where two messages are more than ``session_gap_minutes``
   apart, so a reply is trained on its real context and not on yesterday's (a fragment of a 留痕 JSON export or
   a ChatGPT conversation is one session already).
4. ``merged``: one speaker's consecutive messages become one turn (joined by a newline), as people send several
   short messages in a row.
5. Samples: each of the person's turns with the ``context_turns`` turns before it in its session (starting with
   someone else's turn) is one sample; a turn that opens a session has nothing to reply to (``no_context``).
   The person's reply is checked: ``too_short`` (< ``min_chars``), ``too_long`` (> ``max_chars``), ``duplicate``
   (the same reply to the same last message again, or one reply text more than ``max_repeats`` times).

Sessions are split into training and held-out ones (``held_out_fraction``, seeded) before anything is learned, so
the evaluation asks about conversations the model never saw.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from emotune.data.records import Message, Provenance, Record
from emotune.voice.sources import Conversation, ImportedExport, VoiceMessage, describe_errors

PersonalData = Literal["mask", "drop"]


@dataclass(frozen=True)
class CleaningRules:
    context_turns: int = 4
    session_gap_minutes: float = 60.0
    min_chars: int = 2
    max_chars: int = 200
    max_repeats: int = 3
    personal_data: PersonalData = "mask"
    held_out_fraction: float = 0.2  # as emotune.fine_tuning.protocol.VoiceOptions
    seed: int = 0


# (name, pattern, mask); checked in this order so a longer number is never half-matched by a shorter rule.
def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


PERSONAL_DATA: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[邮箱]"),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                           r"\d{3}[\dXx](?![0-9A-Za-z])"), "[身份证号]"),
    ("bank_card", re.compile(r"(?<![\d-])(?:\d{4}[ -]?){3}\d{4}(?:\d{1,3})?(?![\d-])"), "[银行卡号]"),
    ("phone", re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"), "[手机号]"),
)
PERSONAL_DATA_KINDS = tuple(name for name, _, _ in PERSONAL_DATA)


def find_personal_data(text: str) -> tuple[str, Counter[str]]:
    """The text with personal data masked, and how many of each kind were found."""
    found: Counter[str] = Counter()
    for name, pattern, mask in PERSONAL_DATA:
        def replace(match: re.Match[str], name: str = name, mask: str = mask) -> str:
            if name == "bank_card" and not _luhn(re.sub(r"\D", "", match.group())):
                return match.group()
            found[name] += 1
            return mask
        text = pattern.sub(replace, text)
    return text, found


@dataclass
class VoiceSample:
    """One reply of the person and the turns before it (``context``: (is the person, text), oldest first)."""

    session: str
    context: list[tuple[bool, str]]
    reply: str
    where: str = ""

    def messages(self, system_prompt: str | None) -> list[Message]:
        out = [Message(role="system", content=system_prompt)] if system_prompt else []
        out += [Message(role="assistant" if mine else "user", content=text) for mine, text in self.context]
        return out + [Message(role="assistant", content=self.reply)]


@dataclass
class CleaningReport:
    source: str
    files: int
    conversations: int
    messages: int
    voice_messages: int
    rules: dict[str, int] = field(default_factory=dict)
    sessions: int = 0
    train_sessions: int = 0
    held_out_sessions: int = 0
    train_samples: int = 0
    held_out_samples: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    settings: dict[str, object] = field(default_factory=dict)

    def lines(self) -> list[str]:
        r = self.rules
        personal = ", ".join(f"{r.get(kind, 0)} {kind}" for kind in PERSONAL_DATA_KINDS)
        dropped = (f" ({r.get('personal_data_dropped', 0)} messages dropped)"
                   if self.settings.get("personal_data") == "drop" else "")
        mode = "masked" if self.settings.get("personal_data") == "mask" else "dropped"
        lines = [
            (f"read {self.messages} messages in {self.conversations} conversations ({self.source}, {self.files} "
             f"file(s)); {self.voice_messages} by the voice"),
            (f"dropped: {r.get('media', 0)} media placeholders, {r.get('recalled', 0)} recalled, "
             f"{r.get('system', 0)} system notices, {r.get('empty', 0)} empty"),
            f"personal data {mode}: {personal}{dropped}",
            (f"sessions: {self.sessions} ({r.get('session_splits', 0)} splits at gaps over "
             f"{self.settings.get('session_gap_minutes')} min); {r.get('merged', 0)} consecutive messages merged "
             "into their speaker's turn"),
            (f"replies: {r.get('no_context', 0)} without context, {r.get('too_short', 0)} too short, "
             f"{r.get('too_long', 0)} too long, {r.get('duplicate', 0)} duplicates dropped; context: up to "
             f"{self.settings.get('context_turns')} earlier turns"),
            (f"samples: {self.train_samples} for training ({self.train_sessions} sessions), "
             f"{self.held_out_samples} held out ({self.held_out_sessions} sessions, never trained on)"),
        ]
        if self.error_count:
            lines.append(f"{self.error_count} bad row(s)/item(s) skipped: " + "; ".join(self.errors))
        return lines


@dataclass
class CleanedVoice:
    train: list[VoiceSample]
    held_out: list[VoiceSample]
    report: CleaningReport

    def records(self, system_prompt: str | None, style: str = "voice") -> list[Record]:
        return [Record(id=f"voice-{index:05d}", style=style, messages=sample.messages(system_prompt),
                       provenance=Provenance(teacher="import", source=sample.where), meta={"session": sample.session})
                for index, sample in enumerate(self.train)]


def _sessions(conversation: Conversation, gap_s: float, counts: Counter[str]) -> list[list[VoiceMessage]]:
    if conversation.fragment or not conversation.messages:
        return [conversation.messages] if conversation.messages else []
    sessions, current, last = [], [], None
    for message in conversation.messages:
        if current and message.time is not None and last is not None and message.time - last > gap_s:
            sessions.append(current)
            counts["session_splits"] += 1
            current = []
        current.append(message)
        last = message.time if message.time is not None else last
    if current:
        sessions.append(current)
    return sessions


def _turns(messages: list[VoiceMessage], counts: Counter[str]) -> list[tuple[bool, str, str]]:
    """(is the voice, text, where) turns: one speaker's consecutive messages merged."""
    turns: list[list] = []
    for message in messages:
        if turns and turns[-1][0] == message.voice and turns[-1][3] == message.speaker:
            turns[-1][1] += "\n" + message.text
            counts["merged"] += 1
        else:
            turns.append([message.voice, message.text, message.where, message.speaker])
    return [(voice, text, where) for voice, text, where, _ in turns]


def clean(export: ImportedExport, rules: CleaningRules = CleaningRules()) -> CleanedVoice:
    counts: Counter[str] = Counter()
    for name in ("media", "recalled", "system", "empty", *PERSONAL_DATA_KINDS, "session_splits", "merged",
                 "no_context", "too_short", "too_long", "duplicate"):
        counts[name] = 0
    if rules.personal_data == "drop":
        counts["personal_data_dropped"] = 0

    sessions: list[tuple[str, list[tuple[bool, str, str]]]] = []
    for conversation in export.conversations:
        kept: list[VoiceMessage] = []
        for message in conversation.messages:
            if message.kind != "text":
                counts[message.kind] += 1
                continue
            text = message.text.strip()
            if not text:
                counts["empty"] += 1
                continue
            masked, found = find_personal_data(text)
            counts.update(found)
            if found and rules.personal_data == "drop":
                counts["personal_data_dropped"] += 1
                continue
            kept.append(VoiceMessage(message.voice, message.speaker, masked, message.time, "text", message.where))
        split = _sessions(Conversation(conversation.id, kept, conversation.fragment),
                          rules.session_gap_minutes * 60, counts)
        for number, session in enumerate(split):
            sessions.append((f"{conversation.id}/{number}", _turns(session, counts)))

    # Held-out sessions first (seeded), among sessions where the person replies to someone.
    replying = [name for name, turns in sessions if any(v and i > 0 and not turns[i - 1][0]
                                                        for i, (v, _, _) in enumerate(turns))]
    rng = random.Random(rules.seed)
    shuffled = sorted(replying)
    rng.shuffle(shuffled)
    n_held = round(len(shuffled) * rules.held_out_fraction) if rules.held_out_fraction > 0 else 0
    if rules.held_out_fraction > 0 and len(shuffled) >= 4:
        n_held = max(1, n_held)
    held_names = set(shuffled[:n_held])

    train: list[VoiceSample] = []
    held_out: list[VoiceSample] = []
    seen_pairs: set[tuple[str, str]] = set()
    reply_counts: Counter[str] = Counter()
    for name, turns in sessions:
        for index, (voice, text, where) in enumerate(turns):
            if not voice:
                continue
            start = max(0, index - rules.context_turns)
            context = [(v, t) for v, t, _ in turns[start:index]]
            while context and context[0][0]:
                context.pop(0)  # a sample starts with someone else's turn
            if not context:
                counts["no_context"] += 1
                continue
            if len(text) < rules.min_chars:
                counts["too_short"] += 1
                continue
            if len(text) > rules.max_chars:
                counts["too_long"] += 1
                continue
            sample = VoiceSample(name, context, text, where)
            if name in held_names:
                held_out.append(sample)
                continue
            key = " ".join(text.split()).casefold()
            pair = (context[-1][1], key)
            if pair in seen_pairs or reply_counts[key] >= rules.max_repeats:
                counts["duplicate"] += 1
                continue
            seen_pairs.add(pair)
            reply_counts[key] += 1
            train.append(sample)

    report = CleaningReport(
        source=export.source, files=len(export.files), conversations=len(export.conversations),
        messages=export.messages, voice_messages=export.voice_messages, rules=dict(counts),
        sessions=len(sessions), train_sessions=len({s.session for s in train}),
        held_out_sessions=len({s.session for s in held_out}), train_samples=len(train),
        held_out_samples=len(held_out), errors=describe_errors(export.report.errors),
        error_count=len(export.report.errors),
        settings={"context_turns": rules.context_turns, "session_gap_minutes": rules.session_gap_minutes,
                  "min_chars": rules.min_chars, "max_chars": rules.max_chars, "max_repeats": rules.max_repeats,
                  "personal_data": rules.personal_data, "held_out_fraction": rules.held_out_fraction},
    )
    return CleanedVoice(train, held_out, report)
