"""The formatter training and serving share: a tokenizer bound to its chat template, segments and stop tokens."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotune.errors import InvalidInput
from emotune.models.chat_template.exports import EngineForms
from emotune.models.chat_template.segments import (
    Message,
    TemplateError,
    TurnSegments,
    derive_segments,
    render_jinja,
)

IGNORE_INDEX = -100


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class ChatFormat(EngineForms):
    """A tokenizer bound to its chat template, segments and stop tokens; the engine forms come from
    :class:`EngineForms`."""

    tokenizer: Any
    template: str
    segments: TurnSegments
    stop_token_ids: list[int]
    stop_tokens: list[str] = field(default_factory=list)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, template: str | None = None,
                       eos_token_ids: Iterable[int] = ()) -> ChatFormat:
        """``template`` overrides the tokenizer's; ``eos_token_ids`` are the model's (generation_config)."""
        template = template or tokenizer.chat_template
        if not template:
            raise TemplateError("the tokenizer has no chat template; name one explicitly", field="chat_template")
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError("a fast tokenizer (tokenizer.json) is needed for assistant-only loss masks")
        eos_token_ids = list(eos_token_ids)
        segments = derive_segments(tokenizer, template, eos_token_ids)
        end_id = tokenizer.convert_tokens_to_ids(segments.end_token)
        ids = [end_id, *(i for i in eos_token_ids if i != end_id)]
        ids = list(dict.fromkeys(ids))
        return cls(tokenizer, template, segments, ids, [tokenizer.convert_ids_to_tokens(i) for i in ids])

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, template: str | None = None) -> ChatFormat:
        """Load the tokenizer of a model directory; eos ids from its generation_config.json/config.json."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls.from_tokenizer(tokenizer, template, model_eos_ids(model_dir))

    @property
    def end_token_id(self) -> int:
        return self.stop_token_ids[0]

    def normalize(self, messages: Sequence[Message], source: str = "messages") -> list[Message]:
        """Stripped contents, the template's default system prompt made explicit (same rendering), and system
        messages after the first turn placed as the template allows.

        A later system message (agents and LangChain send them) stays a system turn where it is when the template
        has a system role (ChatML: SmolLM2, Qwen); a template without one (Gemma) has it folded into the next user
        turn, as it folds a leading one (``system + joiner + user``); with no user turn after it, it becomes one.
        """
        out: list[Message] = []
        pending_system: list[str] = []
        for index, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise InvalidInput("each message needs role system/user/assistant and text content",
                                   file=source, field=f"messages[{index}]")
            content = content.strip()
            if role == "system" and index > 0 and self.segments.system_folded:
                pending_system.append(content)
                continue
            if role == "user" and pending_system:
                content = self.segments.system_joiner.join([*pending_system, content])
                pending_system = []
            out.append({"role": role, "content": content})
        if pending_system:
            out.append({"role": "user", "content": self.segments.system_joiner.join(pending_system)})
        return self.segments.with_default_system(out)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The Jinja template's text for these messages (what training and HF serving see)."""
        return render_jinja(self.tokenizer, self.template, self.normalize(messages), add_generation_prompt)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the generation prompt for a conversation, as a serving engine builds them."""
        text = self.render(messages, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, messages: Sequence[Message], source: str = "messages") -> EncodedSample:
        """Training ids with labels only on assistant contents and their end tokens.

        The whole conversation is tokenized at once (as serving will tokenize a prompt) and the loss mask comes
        from character offsets, so no token boundary differs from what an engine sees.
        """
        ids, offsets, spans, _ = self._tokenize(self.normalize(messages, source), source)
        labels = [tid if any(a <= start < b for a, b in spans) else IGNORE_INDEX
                  for tid, (start, _end) in zip(ids, offsets, strict=True)]
        return EncodedSample(ids, labels)

    def training_prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The ids of the training sample that precede its last assistant reply (what the model was shown)."""
        ids, offsets, spans, _ = self._tokenize(self.normalize(messages), "messages")
        last_reply_start = spans[-1][0]
        return [tid for tid, (start, _end) in zip(ids, offsets, strict=True) if start < last_reply_start]

    def _tokenize(self, messages: list[Message], source: str) -> tuple[list[int], list, list[tuple[int, int]], str]:
        if not any(m["role"] == "assistant" for m in messages):
            raise InvalidInput("conversation has no assistant turn to learn from", file=source, field="messages")
        pieces = self.segments.pieces(messages, add_generation_prompt=False)
        text = "".join(p for p, _ in pieces)
        if text != render_jinja(self.tokenizer, self.template, messages, False):
            raise TemplateError("chat template renders this conversation differently from its segments "
                                "(content-dependent template)", file=source, field="messages")
        spans, position = [], 0
        for piece, trained in pieces:
            if trained:
                spans.append((position, position + len(piece)))
            position += len(piece)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoding["input_ids"], encoding["offset_mapping"], spans, text


def model_eos_ids(model_dir: str | Path) -> list[int]:
    """The eos ids a model directory declares (generation_config.json first, then config.json)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            if value is not None:
                return [value] if isinstance(value, int) else list(value)
    return []

