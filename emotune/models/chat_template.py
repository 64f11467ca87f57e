"""One chat template per model, from training to every serving engine.

The #1 failure after fine-tuning (seeds 003/004) is a served model that never stops or repeats the question,
because the template or the stop tokens used in serving differ from the ones used in training. Here a model's
Jinja chat template (the base tokenizer's, or an explicit one) is the single source of truth:

- :class:`ChatFormat` renders training text with it, masks the loss to assistant turns (each ending with the
  template's end token) and knows the stop tokens;
- the template is decomposed into plain turn *segments* (verified to reproduce the Jinja output exactly), from
  which the engine-specific forms are derived: LMDeploy chat-template JSON, Ollama Modelfile TEMPLATE + stop,
  XTuner ``PROMPT_TEMPLATE`` dict;
- :func:`export_chat_files` writes all of them next to an exported model (tokenizer_config.json with the
  template, generation_config.json eos ids, ``lmdeploy_chat_template.json``, ``Modelfile``, ``emotune_chat.json``);
- :func:`check_parity` compares, token id by token id, the prompt the trainer trained on with the prompt each
  export builds for the same conversations, and checks every stop token is present everywhere.

Serving (the inference service) uses :meth:`ChatFormat.from_pretrained` on an exported model directory.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotune.errors import FailedPrecondition, InvalidInput

Message = dict[str, str]

IGNORE_INDEX = -100
LMDEPLOY_FILE = "lmdeploy_chat_template.json"
MODELFILE = "Modelfile"
CHAT_META_FILE = "emotune_chat.json"

# Sentinels used to take a template apart; letters only so no template filter (trim, capitalize...) changes them.
_S, _U1, _A1, _U2, _A2 = "QqSYSq", "QqUSERONEq", "QqASSTONEq", "QqUSERTWOq", "QqASSTTWOq"


class TemplateError(InvalidInput):
    """The chat template cannot be used for training/export (not segmentable, no end token...)."""


class ParityError(FailedPrecondition):
    """An export builds different prompt tokens (or lacks stop tokens) compared with training."""


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


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render_jinja(tokenizer: Any, template: str, messages: Sequence[Message], add_generation_prompt: bool) -> str:
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
            return _render_jinja(tokenizer, template, messages, gen)
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
    return _render_jinja(probe, template, [{"role": "user", "content": _U1}], False).startswith("QqBOSq")


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
            normalized = _with_default_system(segments, probe)
            if segments.render(normalized, gen) != render(probe, gen):
                raise TemplateError(
                    "chat template cannot be expressed as fixed turn segments (it branches on content or "
                    "position), so LMDeploy/Ollama/XTuner exports could not reproduce it", field="chat_template"
                )


def _with_default_system(segments: TurnSegments, messages: Sequence[Message]) -> list[Message]:
    messages = [dict(m) for m in messages]
    if segments.default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": segments.default_system})
    return messages


@dataclass
class ChatFormat:
    """A tokenizer bound to its chat template, segments and stop tokens."""

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
        return _with_default_system(self.segments, out)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        """The Jinja template's text for these messages (what training and HF serving see)."""
        return _render_jinja(self.tokenizer, self.template, self.normalize(messages), add_generation_prompt)

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
        if text != _render_jinja(self.tokenizer, self.template, messages, False):
            raise TemplateError("chat template renders this conversation differently from its segments "
                                "(content-dependent template)", file=source, field="messages")
        spans, position = [], 0
        for piece, trained in pieces:
            if trained:
                spans.append((position, position + len(piece)))
            position += len(piece)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoding["input_ids"], encoding["offset_mapping"], spans, text

    # engine-specific forms
    def lmdeploy_config(self, model_name: str = "emotune") -> dict[str, Any]:
        """LMDeploy ``ChatTemplateConfig`` JSON (loads with ``ChatTemplateConfig.from_json``).

        LMDeploy adds the BOS itself when encoding, so ``bos`` is not part of the text. A folded system message
        (Gemma) cannot be expressed: callers fold it into the first user message (:meth:`fold_system`).
        """
        s = self.segments
        return {
            "model_name": model_name,
            "system": s.system_prefix,
            "meta_instruction": s.default_system,
            "eosys": s.system_suffix,
            "user": s.user_prefix,
            "eoh": s.user_suffix,
            "assistant": s.assistant_prefix,
            "eoa": s.end_token,
            "separator": s.separator,
            "capability": "chat",
            "stop_words": list(self.stop_tokens),
        }

    def fold_system(self, messages: Sequence[Message]) -> list[Message]:
        """For templates without a system turn: the system text joined to the first other message."""
        messages = [dict(m) for m in messages]
        if self.segments.system_folded and len(messages) > 1 and messages[0]["role"] == "system":
            system, first = messages[0], messages[1]
            return [{"role": first["role"], "content": system["content"] + self.segments.system_joiner
                     + first["content"]}, *messages[2:]]
        return messages

    def ollama_template(self) -> str:
        """A Go text/template over ``.Messages`` producing the same prompt (Ollama adds the BOS itself)."""
        s = self.segments

        def lit(text: str) -> str:
            return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""

        lines = []
        if s.default_system is not None:
            lines.append('{{- if or (eq (len .Messages) 0) (ne (index .Messages 0).Role "system") }}'
                         + lit(s.system_prefix + s.default_system + s.system_suffix) + "{{ end }}")
        lines.append("{{- range $i, $m := .Messages }}")
        lines.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
        if s.system_folded:
            lines.append('{{- if eq $m.Role "system" }}{{- if $last }}' + lit(s.assistant_prefix) + "{{ end }}")
            joined = ('{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}'
                      '{{ (index $.Messages 0).Content }}' + lit(s.system_joiner) + "{{ end }}")
        else:
            lines.append('{{- if eq $m.Role "system" }}' + lit(s.system_prefix) + "{{ $m.Content }}"
                         + lit(s.system_suffix) + "{{ if $last }}" + lit(s.assistant_prefix) + "{{ end }}")
            joined = ""
        lines.append('{{- else if eq $m.Role "user" }}' + lit(s.user_prefix) + joined + "{{ $m.Content }}"
                     + lit(s.user_suffix) + "{{ if $last }}" + lit(s.assistant_prefix) + "{{ end }}")
        lines.append('{{- else if eq $m.Role "assistant" }}' + lit(s.assistant_prefix) + joined
                     + "{{ $m.Content }}{{ if not $last }}" + lit(s.assistant_suffix) + "{{ end }}")
        lines.append("{{- end }}")
        lines.append("{{- end }}")
        return "\n".join(lines)

    def ollama_modelfile(self, from_: str = ".", num_ctx: int | None = None) -> str:
        template = self.ollama_template().replace('"""', '\\"\\"\\"')
        out = [f"FROM {from_}", f'TEMPLATE """{template}"""']
        out += [f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}" for token in self.stop_tokens]
        if num_ctx:
            out.append(f"PARAMETER num_ctx {num_ctx}")
        return "\n".join(out) + "\n"

    def xtuner_template(self) -> dict[str, Any]:
        """XTuner 0.2 ``PROMPT_TEMPLATE``-style dict (data must be given with the system folded / explicit)."""
        s = self.segments
        return {
            "SYSTEM": (s.system_prefix + "{system}" + s.system_suffix) if not s.system_folded else "{system}",
            "INSTRUCTION": s.user_prefix + "{input}" + s.user_suffix + s.assistant_prefix,
            "SUFFIX": s.end_token,
            "SUFFIX_AS_EOS": True,
            "SEP": s.separator,
            "STOP_WORDS": list(self.stop_tokens),
        }

    def metadata(self) -> dict[str, Any]:
        return {"chat_template": self.template, "segments": asdict(self.segments),
                "stop_tokens": list(self.stop_tokens), "stop_token_ids": list(self.stop_token_ids)}


def model_eos_ids(model_dir: str | Path) -> list[int]:
    """The eos ids a model directory declares (generation_config.json first, then config.json)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            if value is not None:
                return [value] if isinstance(value, int) else list(value)
    return []


def render_lmdeploy(config: dict[str, Any], messages: Sequence[Message]) -> str:
    """LMDeploy 0.18 ``BaseChatTemplate.messages2prompt`` for a JSON config (checked against LMDeploy itself)."""
    get = {k: (config.get(k) or "") for k in ("system", "eosys", "user", "eoh", "assistant", "eoa", "separator")}
    box = {"user": get["user"], "assistant": get["assistant"], "system": get["system"]}
    eox = {"user": get["eoh"], "assistant": get["eoa"] + get["separator"], "system": get["eosys"]}
    text = ""
    if config.get("meta_instruction") is not None and messages and messages[0]["role"] != "system":
        text += get["system"] + config["meta_instruction"] + get["eosys"]
    for message in messages:
        text += box[message["role"]] + message["content"] + eox[message["role"]]
    if messages and messages[-1]["role"] == "assistant":
        return text[:-len(eox["assistant"])] if eox["assistant"] else text
    return text + get["assistant"]


def lmdeploy_encode(tokenizer: Any, prompt: str) -> list[int]:
    """How LMDeploy tokenizes a prompt: special tokens on (BOS added), a doubled BOS collapsed."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]
    return ids


def export_chat_files(fmt: ChatFormat, out_dir: str | Path, model_name: str = "emotune") -> list[str]:
    """Write the tokenizer (template in tokenizer_config.json, eos = end token), generation_config.json eos ids,
    LMDeploy JSON, Ollama Modelfile and ``emotune_chat.json`` into ``out_dir``; return the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = copy.deepcopy(fmt.tokenizer)  # the training formatter's tokenizer stays as it was
    tokenizer.chat_template = fmt.template
    tokenizer.eos_token = fmt.segments.end_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = fmt.segments.end_token
    if hasattr(tokenizer, "add_bos_token"):
        # A template that writes the BOS itself is fed to engines that also add one (then collapse the pair);
        # one without a BOS must not get one added.
        tokenizer.add_bos_token = bool(fmt.segments.bos)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    written = set(tokenizer.save_pretrained(str(out), save_jinja_files=False))
    _update_json(out / "generation_config.json", eos_token_id=list(fmt.stop_token_ids))
    if (out / "config.json").is_file():
        _update_json(out / "config.json", eos_token_id=list(fmt.stop_token_ids))
    (out / LMDEPLOY_FILE).write_text(json.dumps(fmt.lmdeploy_config(model_name), ensure_ascii=False, indent=2),
                                     encoding="utf-8")
    (out / MODELFILE).write_text(fmt.ollama_modelfile(), encoding="utf-8")
    (out / CHAT_META_FILE).write_text(json.dumps(fmt.metadata(), ensure_ascii=False, indent=2), encoding="utf-8")
    names = {Path(p).name for p in written} | {"generation_config.json", LMDEPLOY_FILE, MODELFILE, CHAT_META_FILE}
    return sorted(names)


def _update_json(path: Path, **values: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(values)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


@dataclass
class ParityReport:
    conversations: int
    engines: list[str]
    mismatches: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def check_parity(train_fmt: ChatFormat, export_dir: str | Path,
                 conversations: Iterable[Sequence[Message]], raise_on_mismatch: bool = True) -> ParityReport:
    """Compare the trained prompt ids with each export's prompt ids, and the stop tokens everywhere.

    For every conversation and every assistant turn in it, the prompt before that turn is built by: the
    training formatter (ids cut from the tokenized training sample), the exported tokenizer's chat template
    (HF / vLLM / LMDeploy's default path), the exported LMDeploy JSON, and the Ollama template's skeleton.
    """
    export = Path(export_dir)
    served = ChatFormat.from_pretrained(export)
    lmdeploy_cfg = json.loads((export / LMDEPLOY_FILE).read_text(encoding="utf-8"))
    modelfile = (export / MODELFILE).read_text(encoding="utf-8")
    mismatches: list[str] = []
    expected_stops = set(train_fmt.stop_tokens)

    def need(engine: str, have: Iterable[str]) -> None:
        missing = expected_stops - set(have)
        if missing:
            mismatches.append(f"{engine}: stop token(s) {sorted(missing)} missing")

    need("generation_config.json", (served.tokenizer.convert_ids_to_tokens(i) for i in model_eos_ids(export)))
    need("tokenizer eos", [served.tokenizer.eos_token, *served.stop_tokens])
    need(LMDEPLOY_FILE, lmdeploy_cfg.get("stop_words") or [])
    need(MODELFILE, _modelfile_stops(modelfile))
    skeleton = train_fmt.ollama_template()
    if skeleton not in modelfile:
        mismatches.append(f"{MODELFILE}: TEMPLATE differs from the one derived from the training template")
    if served.template != train_fmt.template:
        mismatches.append("tokenizer_config.json: chat_template differs from the training template")

    count = 0
    for conversation in conversations:
        messages = [{"role": m["role"], "content": m["content"].strip()} for m in conversation]
        for turn, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            history = messages[:turn]
            trained = train_fmt.training_prompt_ids(messages[:turn + 1])
            engines = {
                "hf": served.tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True),
                "lmdeploy": lmdeploy_encode(served.tokenizer,
                                            render_lmdeploy(lmdeploy_cfg, served.fold_system(history))),
                "training prompt alone": train_fmt.prompt_ids(history),
            }
            for engine, ids in engines.items():
                ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
                if ids != trained:
                    where = next((i for i, (a, b) in enumerate(zip(ids, trained)) if a != b),
                                 min(len(ids), len(trained)))
                    mismatches.append(
                        f"{engine}: conversation {count} turn {turn}: prompt ids differ from the trained ones at "
                        f"token {where}: {served.tokenizer.decode(ids[where:where + 8])!r} vs "
                        f"{served.tokenizer.decode(trained[where:where + 8])!r}"
                    )
        count += 1
    report = ParityReport(count, ["hf", "lmdeploy", "ollama"], mismatches)
    if raise_on_mismatch and mismatches:
        raise ParityError("chat template parity check failed: " + "; ".join(mismatches[:5]),
                          mismatches=len(mismatches))
    return report


def _modelfile_stops(modelfile: str) -> list[str]:
    stops = []
    for line in modelfile.splitlines():
        if line.startswith("PARAMETER stop "):
            stops.append(json.loads(line[len("PARAMETER stop "):]))
    return stops
