"""What each engine is given: the chat format as LMDeploy, Ollama and XTuner express it, and the files an exported
model carries so that every serving engine builds the prompts the model was trained on."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotune.models.chat_template.segments import Message, TurnSegments
from emotune.models.sampling import sampling_defaults

if TYPE_CHECKING:
    from emotune.models.chat_template.formats import ChatFormat

LMDEPLOY_FILE = "lmdeploy_chat_template.json"
MODELFILE = "Modelfile"
CHAT_META_FILE = "emotune_chat.json"


class EngineForms:
    """The engine-specific forms of a chat format, derived from its segments and stop tokens alone."""

    segments: TurnSegments
    stop_tokens: list[str]

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

    def ollama_modelfile(self, from_: str = ".", num_ctx: int | None = None,
                         sampling: Mapping[str, float] | None = None) -> str:
        """``sampling`` (:func:`emotune.models.sampling.sampling_defaults`): the model's own temperature, top-p,
        top-k and repetition penalty (over the whole context, as emotune's engines apply it), so ``ollama run``
        samples as emotune serves."""
        template = self.ollama_template().replace('"""', '\\"\\"\\"')
        out = [f"FROM {from_}", f'TEMPLATE """{template}"""']
        out += [f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}" for token in self.stop_tokens]
        if num_ctx:
            out.append(f"PARAMETER num_ctx {num_ctx}")
        if sampling:
            out += [f"PARAMETER temperature {sampling['temperature']:g}", f"PARAMETER top_p {sampling['top_p']:g}"]
            if sampling["top_k"]:
                out.append(f"PARAMETER top_k {sampling['top_k']}")
            if sampling["repetition_penalty"] != 1.0:
                out += [f"PARAMETER repeat_penalty {sampling['repetition_penalty']:g}", "PARAMETER repeat_last_n -1"]
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


def export_chat_files(fmt: ChatFormat, out_dir: str | Path, model_name: str = "emotune",
                      generation: Mapping[str, Any] | None = None) -> list[str]:
    """Write the tokenizer (template in tokenizer_config.json, eos = end token), generation_config.json eos ids,
    LMDeploy JSON, Ollama Modelfile (with the folder's sampling) and ``emotune_chat.json`` into ``out_dir``; return
    the file names. ``generation`` (the base model's generation_config) is what the folder's own starts from, so an
    adapter folder, which has none, samples as its base everywhere it is read."""
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
    config_path = out / "generation_config.json"
    own = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config_path.write_text(json.dumps({**(generation or {}), **own, "eos_token_id": list(fmt.stop_token_ids)},
                                      ensure_ascii=False, indent=2), encoding="utf-8")
    if (out / "config.json").is_file():
        _update_json(out / "config.json", eos_token_id=list(fmt.stop_token_ids))
    (out / LMDEPLOY_FILE).write_text(json.dumps(fmt.lmdeploy_config(model_name), ensure_ascii=False, indent=2),
                                     encoding="utf-8")
    (out / MODELFILE).write_text(fmt.ollama_modelfile(sampling=sampling_defaults(out)), encoding="utf-8")
    (out / CHAT_META_FILE).write_text(json.dumps(_chat_meta(fmt), ensure_ascii=False, indent=2), encoding="utf-8")
    names = {Path(p).name for p in written} | {"generation_config.json", LMDEPLOY_FILE, MODELFILE, CHAT_META_FILE}
    return sorted(names)


def _update_json(path: Path, **values: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(values)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def _chat_meta(fmt: ChatFormat) -> dict[str, Any]:
    return {"chat_template": fmt.template, "segments": asdict(fmt.segments),
            "stop_tokens": list(fmt.stop_tokens), "stop_token_ids": list(fmt.stop_token_ids)}
