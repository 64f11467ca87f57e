"""Preference pairs from the one style definition, for DPO (Open Character Training's recipe): *chosen* is the
teacher's kept answer (full prompt, best-of-N, sense and style checked by the validator), *rejected* is what the
student's base model says to the same conversation with only the style's trigger — the generic assistant the
student drifts back to. Training then pushes the student away from that reply, not only toward the teacher's
average one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from emotune.records import Message, Record
from emotune.v1 import inference_pb2, inference_pb2_grpc

# The base model's own sampling, as the evaluation samples it: the rejected side is what it would really say.
REJECTED_SAMPLING = {"temperature": 0.7, "top_p": 0.9}


@dataclass
class StylePairs:
    pairs: int = 0
    # Chosen answers that were not the teacher's first candidate: how often best-of-N changed the pick.
    best_of_changed: int = 0
    dropped_empty: int = 0


@dataclass
class PairsReport:
    styles: dict[str, StylePairs] = field(default_factory=dict)

    def lines(self, best_of: int) -> list[str]:
        out = []
        for name, info in self.styles.items():
            line = f"{name}: {info.pairs} preference pairs (chosen: the teacher's kept answer; rejected: the base " \
                   f"model with the trigger only)"
            if best_of > 1:
                line += f"; best-of-{best_of} changed the pick for {info.best_of_changed} of {info.pairs}"
            if info.dropped_empty:
                line += f"; {info.dropped_empty} dropped (empty base reply)"
            out.append(line)
        return out


async def build_pairs(inference: inference_pb2_grpc.InferenceStub, kept: list[Record], base_model: str, *,
                      max_tokens: int, seed: int, slots: int,
                      progress: Callable[[int, int], None] | None = None) -> tuple[list[Record], PairsReport]:
    """One pair per kept record (in order), its ``rejected`` the base model's reply to everything before the
    record's last reply (the trigger as system message, and the conversation)."""
    limit = asyncio.Semaphore(max(1, slots))
    done = 0

    async def rejected(record: Record, number: int) -> str:
        nonlocal done
        prompt = record.prompt_messages
        request = inference_pb2.ChatRequest(
            model=base_model, whole_reply=True,
            messages=[inference_pb2.ChatMessage(role=m.role, content=m.content) for m in prompt],
            sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, seed=seed + number, **REJECTED_SAMPLING),
        )
        async with limit:
            text = "".join([chunk.text async for chunk in inference.Chat(request)]).strip()
        done += 1
        if progress:
            progress(done, len(kept))
        return text

    replies = await asyncio.gather(*(rejected(record, n) for n, record in enumerate(kept)))
    report, pairs = PairsReport(), []
    for record, reply in zip(kept, replies):
        info = report.styles.setdefault(record.style or "", StylePairs())
        if not reply:
            info.dropped_empty += 1
            continue
        info.pairs += 1
        info.best_of_changed += int(record.meta.get("variant", 0) != 0)
        pairs.append(record.model_copy(update={"rejected": Message(role="assistant", content=reply)}))
    return pairs, report
