"""A chat template taken apart into literal turn segments, proven to reproduce the Jinja template exactly.

Segments are the form every engine can express (LMDeploy, Ollama, XTuner have no Jinja), so a template that
cannot be written as fixed segments, or whose assistant turns do not end with an end token, is refused here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emotune.errors import InvalidInput

Message = dict[str, str]

# Sentinels used to take a template apart; letters only so no template filter (trim, capitalize...) changes them.
_S, _U1, _A1, _U2, _A2 = "QqSYSq", "QqUSERONEq", "QqASSTONEq", "QqUSERTWOq", "QqASSTTWOq"


class TemplateError(InvalidInput):
    """The chat template cannot be used for training/export (not segmentable, no end token...)."""


@dataclass(frozen=True)
class TurnSegments:
    """A chat template as literal pieces around each message, the form LMDeploy/Ollama/XTuner can express.

    ``system_folded``: the template has no system turn; a leading system message is prepended to the first
    other turn's content with ``system_joiner`` (Gemma). ``default_system``: text the template inserts as
    system prompt when a conversation has none (SmolLM2, Qwen2.5).
    """

    bos: str
    system_prefix: str
    system_suffix: str
    system_folded: bool
    system_joiner: str
    default_system: str | None
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    end_token: str

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        """The template's output for already-normalized messages (see :meth:`ChatFormat.normalize`)."""
        return "".join(piece for piece, _ in self.pieces(messages, add_generation_prompt))

    def pieces(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[tuple[str, bool]]:
        """(text, trained) pieces in order; ``trained`` marks assistant content + its end token."""
        out: list[tuple[str, bool]] = [(self.bos, False)]
        messages = list(messages)
        folded_system = None
        if self.system_folded and messages and messages[0]["role"] == "system":
            folded_system = messages.pop(0)["content"]
        for index, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if folded_system is not None and index == 0:
                content = folded_system + self.system_joiner + content
            if role == "system":
                out.append((self.system_prefix + content + self.system_suffix, False))
            elif role == "user":
                out.append((self.user_prefix + content + self.user_suffix, False))
            elif role == "assistant":
                out.append((self.assistant_prefix, False))
                out.append((content + self.end_token, True))
                out.append((self.assistant_suffix[len(self.end_token):], False))
            else:
                raise InvalidInput(f"unknown role {role!r}", field=f"messages[{index}].role")
        if add_generation_prompt:
            out.append((self.assistant_prefix, False))
        return [(text, trained) for text, trained in out if text]

    @property
    def separator(self) -> str:
        """What follows the end token of an assistant turn (e.g. "\\n")."""
        return self.assistant_suffix[len(self.end_token):]

    def with_default_system(self, messages: Sequence[Message]) -> list[Message]:
        """The messages with the template's default system prompt made explicit (it renders the same)."""
        messages = [dict(m) for m in messages]
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": self.default_system})
        return messages


def render_jinja(tokenizer: Any, template: str, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _between(text: str, start: str, end: str | None) -> str:
    i = text.index(start) + len(start)
    return text[i:] if end is None else text[i:text.index(end, i)]


def derive_segments(tokenizer: Any, template: str, eos_token_ids: Sequence[int] = ()) -> TurnSegments:
    """Take a Jinja template apart into :class:`TurnSegments` and prove the segments reproduce it."""
    def render(messages: list[Message], gen: bool) -> str:
        try:
            return render_jinja(tokenizer, template, messages, gen)
        except Exception as exc:
            raise TemplateError(f"chat template failed to render a probe conversation: {exc}",
                                field="chat_template") from exc

    u1, a1, u2, a2 = ({"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
                      {"role": "user", "content": _U2}, {"role": "assistant", "content": _A2})
    two_turns = render([u1, a1, u2, a2], False)
    if not all(s in two_turns for s in (_U1, _A1, _U2, _A2)):
        raise TemplateError("chat template drops message contents", field="chat_template")
    assistant_suffix = _between(two_turns, _A2, None)
    after_a1 = _between(two_turns, _A1, _U2)
    if not assistant_suffix.strip() or not after_a1.startswith(assistant_suffix):
        raise TemplateError(
            "chat template does not close assistant turns with an end token, so a fine-tuned model would "
            "never learn to stop; use a template whose assistant turns end with an end-of-turn token",
            field="chat_template",
        )
    user_prefix = after_a1[len(assistant_suffix):]
    head = two_turns[:two_turns.index(_U1)]
    if not head.endswith(user_prefix):
        raise TemplateError("chat template renders the first user turn differently from later ones",
                            field="chat_template")
    pre = head[:len(head) - len(user_prefix)]
    one_user = render([u1], False)
    user_suffix = _between(one_user, _U1, None)
    with_prompt = render([u1], True)
    if not with_prompt.startswith(one_user):
        raise TemplateError("chat template's generation prompt is not appended after the turns",
                            field="chat_template")
    assistant_prefix = with_prompt[len(one_user):]
    if _between(two_turns, _U1, _A1) != user_suffix + assistant_prefix:
        raise TemplateError("chat template's assistant turns do not start with its generation prompt",
                            field="chat_template")
    bos = tokenizer.bos_token if _template_writes_bos(tokenizer, template) else ""
    if not pre.startswith(bos):
        raise TemplateError("chat template writes the BOS token after other text", field="chat_template")
    end_token = _leading_token(tokenizer, assistant_suffix, eos_token_ids)

    with_system = render([{"role": "system", "content": _S}, u1, a1], False)
    if _S not in with_system:
        raise TemplateError("chat template drops the system message", field="chat_template")
    before_s = with_system[:with_system.index(_S)]
    between_s_u1 = _between(with_system, _S, _U1)
    default_system = None
    if before_s == bos + user_prefix:  # system folded into the first user turn
        folded, joiner, system_prefix, system_suffix = True, between_s_u1, "", ""
    else:
        if not between_s_u1.endswith(user_prefix) or not before_s.startswith(bos):
            raise TemplateError("chat template's system turn has an unsupported shape", field="chat_template")
        folded, joiner = False, ""
        system_prefix = before_s[len(bos):]
        system_suffix = between_s_u1[:len(between_s_u1) - len(user_prefix)]
        default_block = pre[len(bos):]
        if default_block:
            if not (default_block.startswith(system_prefix) and default_block.endswith(system_suffix)):
                raise TemplateError("chat template adds text before the first turn that is not a system turn",
                                    field="chat_template")
            default_system = default_block[len(system_prefix):len(default_block) - len(system_suffix)]
    if pre[len(bos):] and folded:
        raise TemplateError("chat template adds text before the first turn", field="chat_template")

    segments = TurnSegments(bos, system_prefix, system_suffix, folded, joiner, default_system, user_prefix,
                            user_suffix, assistant_prefix, assistant_suffix, end_token)
    _verify_segments(segments, render)
    return segments


def _template_writes_bos(tokenizer: Any, template: str) -> bool:
    """Whether the template itself emits ``bos_token`` (told apart from a turn marker that is also the BOS)."""
    if not tokenizer.bos_token:
        return False
    probe = copy.deepcopy(tokenizer)
    probe.bos_token = "QqBOSq"
    return render_jinja(probe, template, [{"role": "user", "content": _U1}], False).startswith("QqBOSq")


def _leading_token(tokenizer: Any, text: str, eos_token_ids: Sequence[int]) -> str:
    """The single end-of-turn token a text starts with: one the model declares as eos, or a special token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    token = tokenizer.decode(ids[:1]) if ids else ""
    special = set(tokenizer.all_special_tokens)
    special.update(t.content for t in tokenizer.added_tokens_decoder.values())
    if token and text.startswith(token) and (ids[0] in eos_token_ids or token in special):
        return token
    raise TemplateError(
        f"assistant turns end with {text!r}, which does not start with an eos or special token of the model; "
        "serving engines could not stop on it", field="chat_template",
    )


_PROBES: list[list[Message]] = [
    [{"role": "user", "content": _U1}],
    [{"role": "system", "content": _S}, {"role": "user", "content": _U1}],
    [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1}],
    [{"role": "system", "content": _S}, {"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
     {"role": "user", "content": _U2}],
    [{"role": "user", "content": _U1}, {"role": "assistant", "content": _A1}, {"role": "user", "content": _U2},
     {"role": "assistant", "content": _A2}],
]


def _verify_segments(segments: TurnSegments, render: Any) -> None:
    for probe in _PROBES:
        for gen in (False, True):
            if segments.render(segments.with_default_system(probe), gen) != render(probe, gen):
                raise TemplateError(
                    "chat template cannot be expressed as fixed turn segments (it branches on content or "
                    "position), so LMDeploy/Ollama/XTuner exports could not reproduce it", field="chat_template"
                )
