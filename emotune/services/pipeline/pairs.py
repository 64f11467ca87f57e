"""Preference pairs from the one style definition, for DPO: *chosen* is the teacher's kept answer (full prompt,
best-of-N, sense and style checked by the validator); *rejected* is one of two things (``rejected``):

- ``base_model`` (Open Character Training's recipe): what the student's base model says to the same conversation
  with only the style's trigger — the generic assistant the student drifts back to;
- ``other_style``: another style's kept answer to the same question, so the pair differs in style only — both
  replies are on topic and were checked for sense — and what the student learns is to let the trigger decide the
  style. A record whose question no other style kept an answer for falls back to the base model's reply.

The generic assistant *is* gentle: against ``base_model`` a 温柔 student is pushed away from its own style (a
measured main job: 温柔's accuracy fell to 0.25 and half its replies looped), which ``other_style`` avoids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from emotune.data.records import Message, Record
from emotune.v1 import inference_pb2, inference_pb2_grpc

# The base model's own sampling, as the evaluation samples it: the rejected side is what it would really say.
REJECTED_SAMPLING = {"temperature": 0.7, "top_p": 0.9}


REJECTED_SOURCES = ("base_model", "other_style")


@dataclass
class StylePairs:
    pairs: int = 0
    # Pairs whose rejected reply is another style's kept answer (the rest: the base model's reply).
    other_style: int = 0
    # Chosen answers that were not the teacher's first candidate: how often best-of-N changed the pick.
    best_of_changed: int = 0
    dropped_empty: int = 0


@dataclass
class PairsReport:
    styles: dict[str, StylePairs] = field(default_factory=dict)

    def lines(self, best_of: int) -> list[str]:
        out = []
        for name, info in self.styles.items():
            base = info.pairs - info.other_style
            rejected = ", ".join(part for part in (
                f"{info.other_style} another style's answer to the same question" if info.other_style else "",
                f"{base} the base model with the trigger only" if base else "") if part)
            line = f"{name}: {info.pairs} preference pairs (chosen: the teacher's kept answer; rejected: {rejected})"
            if best_of > 1:
                line += f"; best-of-{best_of} changed the pick for {info.best_of_changed} of {info.pairs}"
            if info.dropped_empty:
                line += f"; {info.dropped_empty} dropped (empty base reply)"
            out.append(line)
        return out


def _question_key(record: Record) -> tuple[tuple[str, str], ...]:
    """What a reply answers, whatever the style: the conversation without its system message (the trigger)."""
    return tuple((m.role, m.content) for m in record.prompt_messages if m.role != "system")


def other_style_answers(kept: list[Record]) -> dict[int, str]:
    """For each kept record (by index), another style's kept answer to the same question, where one exists.

    Among several, the first other style in the order of ``kept`` (the validator's order) is taken.
    """
    by_question: dict[tuple, dict[str, str]] = {}
    for record in kept:
        by_question.setdefault(_question_key(record), {}).setdefault(record.style or "", record.assistant_text)
    answers = {}
    for number, record in enumerate(kept):
        others = [text for style, text in by_question[_question_key(record)].items()
                  if style != (record.style or "") and text.strip()]
        if others:
            answers[number] = others[0]
    return answers


async def build_pairs(inference: inference_pb2_grpc.InferenceStub, kept: list[Record], base_model: str, *,
                      max_tokens: int, seed: int, slots: int, rejected_source: str = "base_model",
                      progress: Callable[[int, int], None] | None = None) -> tuple[list[Record], PairsReport]:
    """One pair per kept record (in order). Its ``rejected`` is another style's answer to the same question
    (``rejected_source="other_style"``, where one exists) or the base model's reply to everything before the
    record's last reply (the trigger as system message, and the conversation)."""
    if rejected_source not in REJECTED_SOURCES:
        raise ValueError(f"rejected_source must be one of {', '.join(REJECTED_SOURCES)}, not {rejected_source!r}")
    from_other_style = other_style_answers(kept) if rejected_source == "other_style" else {}
    from_base = [number for number in range(len(kept)) if number not in from_other_style]
    limit = asyncio.Semaphore(max(1, slots))
    done = 0

    async def base_reply(number: int) -> str:
        nonlocal done
        prompt = kept[number].prompt_messages
        request = inference_pb2.ChatRequest(
            model=base_model, whole_reply=True,
            messages=[inference_pb2.ChatMessage(role=m.role, content=m.content) for m in prompt],
            sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, seed=seed + number, **REJECTED_SAMPLING),
        )
        async with limit:
            text = "".join([chunk.text async for chunk in inference.Chat(request)]).strip()
        done += 1
        if progress:
            progress(done, len(from_base))
        return text

    replies = {**from_other_style,
               **dict(zip(from_base, await asyncio.gather(*(base_reply(number) for number in from_base))))}
    report, pairs = PairsReport(), []
    for number, record in enumerate(kept):
        info = report.styles.setdefault(record.style or "", StylePairs())
        reply = replies[number]
        if not reply:
            info.dropped_empty += 1
            continue
        info.pairs += 1
        info.other_style += int(number in from_other_style)
        info.best_of_changed += int(record.meta.get("variant", 0) != 0)
        pairs.append(record.model_copy(update={"rejected": Message(role="assistant", content=reply)}))
    return pairs, report
