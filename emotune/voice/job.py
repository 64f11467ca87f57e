"""What a voice job needs from an export: training records, held-out samples, the cleaning report, and the
styles document the voice probe scores replies with (shared by the pipeline and the CLI)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import yaml

from emotune.data.records import Record
from emotune.fine_tuning.protocol import VoiceOptions
from emotune.voice.cleaning import CleaningReport, CleaningRules, clean
from emotune.voice.sources import read_export

VOICE_STYLE = "voice"  # the served style id: <fine_tuned_model>:voice
ASSISTANT_STYLE = "assistant"
# The trigger names no persona: the fine-tune has to carry the voice, not the prompt.
DEFAULT_TRIGGER = "像我平时聊天那样回复。"
PROBE_REFERENCES = 48  # training samples the probe is built from: the person's replies, the base model's
# The probe's other side when no contrast from the base model is at hand (a job checkpointed before it was):
# what a generic assistant says, polite, complete, explaining, in lists.
GENERIC_ASSISTANT_REPLIES = [
    "您好！很高兴为您提供帮助。请问有什么可以为您做的吗？",
    "这是一个很好的问题。以下是一些建议：1. 保持规律作息；2. 适当运动；3. 均衡饮食。",
    "我理解您的感受。面对这种情况，建议您先冷静下来，然后尝试与对方进行沟通。",
    "作为一个人工智能助手，我没有个人感受，但我可以为您提供一些相关信息。",
    "当然可以！以下是详细的步骤说明，希望对您有所帮助。",
    "感谢您的提问。关于这个问题，可以从以下几个方面来考虑。",
    "如果您还有其他问题，欢迎随时向我提问，我会尽力为您解答。",
    "根据您提供的信息，我建议您制定一个详细的计划，并逐步实施。",
    "首先，我们需要明确目标；其次，分析现有条件；最后，选择合适的方法。",
    "很抱歉听到这个消息。请记住，照顾好自己的身心健康是最重要的。",
    "总的来说，这取决于您的具体需求和实际情况。建议您综合考虑后再做决定。",
    "以下是一些常见的解决方法，您可以根据自己的情况进行选择。",
    "Hello! How can I assist you today? Feel free to ask me anything.",
    "Here are a few tips: 1. Get enough sleep. 2. Stay hydrated. 3. Take regular breaks.",
    "As an AI language model, I don't have personal opinions, but I can offer some information.",
    "I understand how you feel. It might help to talk to someone you trust about it.",
]


def rules_from(options: Any | None, seed: int) -> CleaningRules:
    """:class:`CleaningRules` from a job's ``emotune.voice`` options (None: the API's defaults, as a job that
    names no options gets them)."""
    options = options if options is not None else VoiceOptions()
    return CleaningRules(context_turns=options.context_turns, session_gap_minutes=options.session_gap_minutes,
                         min_chars=options.min_chars, max_chars=options.max_chars, max_repeats=options.max_repeats,
                         personal_data=options.personal_data, held_out_fraction=options.held_out_fraction,
                         seed=seed)


@dataclass
class VoiceData:
    records: list[Record]
    held_out: list[dict[str, Any]]  # {"session", "context": [{"role", "content"}], "reply"}
    report: CleaningReport
    probe_references: list[str]  # the person's replies to probe_contexts
    probe_contexts: list[list[dict[str, str]]]  # training contexts the base model answers for the probe's contrast
    trigger: str

    def summary(self) -> dict[str, Any]:
        """What the pipeline keeps in its checkpoint (JSON)."""
        return {"report": vars(self.report), "report_lines": self.report.lines(), "held_out": self.held_out,
                "probe_references": self.probe_references, "probe_contexts": self.probe_contexts,
                "trigger": self.trigger, "train_samples": len(self.records)}


def prepare(content: bytes | None, filename: str, options: Any | None = None, seed: int = 0,
            path: str | None = None) -> VoiceData:
    source = options.source if options is not None else "auto"
    speaker = options.speaker if options is not None else ""
    trigger = (options.system_prompt if options is not None and options.system_prompt else DEFAULT_TRIGGER)
    export = read_export(path, data=content, filename=filename, source=source, speaker=speaker)
    cleaned = clean(export, rules_from(options, seed))
    records = cleaned.records(trigger, style=VOICE_STYLE)
    held_out = [{"session": s.session, "reply": s.reply,
                 "context": [m.model_dump() for m in s.messages(None)[:-1]]} for s in cleaned.held_out]
    probe = list({s.reply: s for s in cleaned.train}.values())  # one sample per distinct reply
    random.Random(seed).shuffle(probe)
    probe = probe[:PROBE_REFERENCES]
    return VoiceData(records, held_out, cleaned.report, [s.reply for s in probe],
                     [[m.model_dump() for m in s.messages(None)[:-1]] for s in probe], trigger)


def probe_styles_yaml(references: list[str], trigger: str, contrast: list[str] | None = None) -> str:
    """Two styles for the validator's ``Score``: the person's replies (``voice``) and ``contrast`` — the base
    model's replies to the same training contexts (``assistant``; generic assistant replies when None). A reply's
    ``style_margin`` for ``voice`` (its similarity to the person's replies minus to the contrast's) is its voice
    score: a nearest-centroid probe on the embeddings. Contrasting replies to the *same* contexts, in the export's
    own language, leaves the manner to decide, not the topic or the language."""
    loose = {"min": 1, "max": 4000}
    return yaml.safe_dump({"styles": [
        {"name": VOICE_STYLE, "system_prompt": trigger, "reference_texts": references, "length": loose},
        {"name": ASSISTANT_STYLE, "system_prompt": "You are a helpful assistant.",
         "reference_texts": contrast or GENERIC_ASSISTANT_REPLIES, "length": loose},
    ]}, allow_unicode=True, sort_keys=False)
