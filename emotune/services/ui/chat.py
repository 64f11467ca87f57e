"""Chat state, independent of Streamlit: the whole conversation is what gets sent, every turn.

Seed 000's page sent only the current message, so the model never saw the conversation; here each request is
built from the full history (plus an optional system prompt override). A failed answer leaves the user's
message in place, so nothing typed is lost and "Regenerate" can answer it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass
class Message:
    role: Role
    content: str
    model: str | None = None  # which model/style produced an assistant message
    finish_reason: str | None = None


@dataclass
class Conversation:
    messages: list[Message] = field(default_factory=list)
    error: str | None = None  # the last failure, shown until the next turn

    def add_user(self, text: str) -> None:
        text = text.strip()
        if not text:
            raise ValueError("empty message")
        self.messages.append(Message("user", text))
        self.error = None

    def add_answer(self, text: str, model: str, finish_reason: str | None = None) -> None:
        self.messages.append(Message("assistant", text, model=model, finish_reason=finish_reason))
        self.error = None

    @property
    def awaiting_answer(self) -> bool:
        return bool(self.messages) and self.messages[-1].role == "user"

    def prepare_regenerate(self) -> bool:
        """Drop the last answer so the last user message is answered again; False if there is nothing to do."""
        if self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
        self.error = None
        return self.awaiting_answer

    def clear(self) -> None:
        self.messages.clear()
        self.error = None

    def request_messages(self, system_prompt: str | None = None) -> list[dict[str, str]]:
        """OpenAI ``messages`` for the next answer: the whole history, user/assistant strictly alternating
        (consecutive user messages left by failed answers are joined; strict templates such as Gemma's
        refuse two user turns in a row)."""
        out: list[dict[str, str]] = []
        if system_prompt and system_prompt.strip():
            out.append({"role": "system", "content": system_prompt.strip()})
        for message in self.messages:
            if out and out[-1]["role"] == message.role == "user":
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n\n{message.content}"}
            else:
                out.append({"role": message.role, "content": message.content})
        return out

    def transcript(self) -> str:
        """Plain-text copy of the conversation (for the copy/download control)."""
        return "\n\n".join(f"{m.role}{f' ({m.model})' if m.model else ''}: {m.content}" for m in self.messages)


@dataclass
class Round:
    """One Compare turn: the prompt sent to every side, and what each side answered (or why it failed)."""

    prompt: str
    answers: dict[str, Message] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def side_conversation(rounds: list[Round], side: str) -> Conversation:
    """One side's own conversation: every prompt and that side's answers, so follow-ups are multi-turn."""
    conversation = Conversation()
    for round_ in rounds:
        conversation.add_user(round_.prompt)
        if side in round_.answers:
            conversation.messages.append(round_.answers[side])
    return conversation
