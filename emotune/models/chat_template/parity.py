"""The check that an export serves what was trained: the same prompt token ids from every engine's template, and
every stop token everywhere."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotune.errors import FailedPrecondition
from emotune.models.chat_template.exports import LMDEPLOY_FILE, MODELFILE
from emotune.models.chat_template.formats import ChatFormat, model_eos_ids
from emotune.models.chat_template.segments import Message


class ParityError(FailedPrecondition):
    """An export builds different prompt tokens (or lacks stop tokens) compared with training."""


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
