"""Voice evaluation: on held-out sessions (never trained on), given the same context, are the tuned model's replies
closer to the person's voice than the base model's?

For each held-out reply of the person, the base model and the tuned model answer the same context (the serving
trigger + the earlier turns), with the same seed. The validator's ``Score`` rates every reply against two
reference sets built on the same training contexts: the person's replies, and the base model's own replies to
those contexts (the manner the fine-tune has to leave). A reply's **voice score** is its ``style_margin`` for the
voice (mean similarity to the person's replies minus to the base model's) — a nearest-centroid probe on the
embeddings. The person's real held-out replies are scored the same way (the ``real`` row: where the person is);
the probe's accuracy on held-out replies (real ones read as the voice, the base model's as not) is reported, so a
probe that cannot tell the two apart shows. Each reply's sense is read as the style evaluation reads it (the
validator's judge, against the other side's last turn; loops and echoes), the person's own replies included, so
the judge's bias against short casual replies shows beside the model rows. The gate is the style gate's paired test (:func:`gate.judge_style`): tuned vs
base question by question, one-sided Wilcoxon, p < 0.05, with enough held-out replies and training samples, and
not significantly worse in sense than the base model nor looping more often;
``retention`` is the share of the way from the base model to the real replies that the tuned model covers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from statistics import fmean
from typing import Any

from emotune.services.pipeline.evaluation import SHOWN_SAMPLES, EvaluationReplies
from emotune.services.pipeline.gate import (
    GateRule,
    ReplySense,
    judge_style,
    reply_sense,
    sense_columns,
    summarize,
)
from emotune.v1 import inference_pb2, inference_pb2_grpc, validator_pb2_grpc
from emotune.voice.job import GENERIC_ASSISTANT_REPLIES, VOICE_STYLE, probe_styles_yaml

# The voice score is a difference of two cosine means (a few hundredths apart): no margin, the test alone.
VOICE_RULE = GateRule(margin=0.0)
CONFIGS = ("base", "tuned", "real")


class VoiceEvaluator:
    def __init__(self, inference: inference_pb2_grpc.InferenceStub, validator: validator_pb2_grpc.ValidatorStub):
        self.inference, self.validator = inference, validator

    async def evaluate(self, held_out: list[dict[str, Any]], references: list[str], trigger: str, *,
                       base_model: str, tuned_model: str, probe_contexts: list[list[dict[str, str]]] | None = None,
                       max_tokens: int = 64, seed: int = 0, train_samples: int | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       rule: GateRule = VOICE_RULE) -> dict[str, Any]:
        """``references`` are the person's replies to ``probe_contexts`` (training contexts); without contexts (a
        job checkpointed before they were kept) the probe's other side is generic assistant replies."""
        contexts = probe_contexts or []
        # the base and tuned replies written, the three configurations read by the judge (the real replies too), and
        # the probe's contrast replies
        generation = await EvaluationReplies.open(self.inference, 5 * len(held_out) + len(contexts),
                                                 max_tokens=max_tokens, seed=seed, progress=progress)

        async def answer(model: str, context: list[dict[str, str]]) -> tuple[str, bool]:
            return await generation.reply(model, [inference_pb2.ChatMessage(role=m["role"], content=m["content"])
                                                 for m in [{"role": "system", "content": trigger}, *context]])

        # One model at a time (llama.cpp): the base model's contrast and held-out replies, then the tuned model's.
        contrast = [text for text, _ in await asyncio.gather(*(answer(base_model, c) for c in contexts)) if text]
        answered: dict[str, list[tuple[str, bool]]] = {}
        for config, model in (("base", base_model), ("tuned", tuned_model)):
            answered[config] = list(await asyncio.gather(*(answer(model, s["context"]) for s in held_out)))
        answered["real"] = [(s["reply"], False) for s in held_out]
        replies = {config: [text for text, _ in answered[config]] for config in CONFIGS}
        # What each reply answers: the other side's last turn (the judge reads the reply's sense against it).
        questions = [next((m["content"] for m in reversed(s["context"]) if m["role"] == "user"), "")
                     for s in held_out]
        styles_yaml = probe_styles_yaml(references, trigger, contrast or None)
        scores: dict[str, list[float]] = {}
        sense: dict[str, list[ReplySense]] = {}
        rows = []
        for config in CONFIGS:
            scored = await generation.read(self.validator, replies[config], VOICE_STYLE, styles_yaml, questions)
            scores[config] = [s.style_margin for s in scored.scores]
            sense[config] = [reply_sense(s, capped) for s, (_, capped) in zip(scored.scores, answered[config],
                                                                               strict=True)]
            rows.append({"config": config, "model": {"base": base_model, "tuned": tuned_model,
                                                     "real": "the person"}[config],
                         "voice_score": round(fmean(scores[config]), 4) if scores[config] else 0.0,
                         # the probe's reading (a judge, where one is configured, reads sense, not the voice)
                         "voice_accuracy": round(fmean(m > 0 for m in scores[config]), 4) if scores[config] else 0.0,
                         **sense_columns(sense[config]),
                         "mean_chars": round(fmean(len(r) for r in replies[config]), 1) if replies[config] else 0.0})
        verdict = judge_style(VOICE_STYLE, scores["tuned"], scores["base"], scores["real"], train_samples, rule,
                              tuned_sense=sense["tuned"], base_sense=sense["base"])
        promoted, words = summarize([verdict], "{:.0%} of the way from the base model to the person's real replies")
        read_as_voice = {row["config"]: row["voice_accuracy"] for row in rows}
        samples = [{"context": s["context"], "real": s["reply"], "base": replies["base"][i],
                    "tuned": replies["tuned"][i],
                    "scores": {c: round(scores[c][i], 4) for c in CONFIGS},
                    "sense": {c: sense[c][i].sense for c in CONFIGS},
                    "loops": {c: sense[c][i].loops for c in CONFIGS}}
                   for i, s in enumerate(held_out)]
        return {"kind": "voice", "table": rows, "verdicts": {VOICE_STYLE: verdict.to_json()},
                "promoted": promoted, "verdict": words.replace("closer to the style", "closer to the voice"),
                "samples": samples[:SHOWN_SAMPLES], "all_samples": samples,
                "classifier": "centroid probe: the person's replies vs " + (
                    "the base model's replies to the same training contexts" if contrast
                    else "generic assistant replies"),
                "probe": {"voice_references": len(references), "contrast_references": len(contrast)
                          or len(GENERIC_ASSISTANT_REPLIES),
                          # held-out: the person's real replies read as the voice, the base model's read as not
                          "real_read_as_voice": read_as_voice["real"], "base_read_as_not": round(
                              1 - read_as_voice["base"], 4),
                          "balanced_accuracy": round((read_as_voice["real"] + 1 - read_as_voice["base"]) / 2, 4)}}

