"""Voice evaluation: on held-out sessions (never trained on), given the same context, are the tuned model's replies
closer to the person's voice than the base model's?

For each held-out reply of the person, the base model and the tuned model answer the same context (the serving
trigger + the earlier turns), with the same seed. The validator's ``Score`` rates every reply against two
reference sets: the person's kept training replies and generic assistant replies; a reply's **voice score** is its
``style_margin`` for the voice (mean similarity to the person's replies minus to the assistant's) — a
nearest-centroid probe on the embeddings. The person's real held-out replies are scored the same way (the
``real`` row: where the person is). The gate is the style gate's paired test (:func:`gate.judge_style`): tuned vs
base question by question, one-sided Wilcoxon, p < 0.05, with enough held-out replies and training samples;
``retention`` is the share of the way from the base model to the real replies that the tuned model covers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from statistics import fmean
from typing import Any

from emotune.v1 import inference_pb2, inference_pb2_grpc, validator_pb2, validator_pb2_grpc
from emotune.voice.job import VOICE_STYLE, probe_styles_yaml
from services.pipeline.gate import GateRule, judge_style, summarize

# The voice score is a difference of two cosine means (a few hundredths apart): no margin, the test alone.
VOICE_RULE = GateRule(margin=0.0)
SHOWN_SAMPLES = 3
CONFIGS = ("base", "tuned", "real")


class VoiceEvaluator:
    def __init__(self, inference: inference_pb2_grpc.InferenceStub, validator: validator_pb2_grpc.ValidatorStub):
        self.inference, self.validator = inference, validator

    async def _reply(self, model: str, messages: list[dict[str, str]], max_tokens: int, seed: int) -> str:
        request = inference_pb2.ChatRequest(
            model=model, messages=[inference_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
            sampling=inference_pb2.SamplingParams(temperature=0.7, top_p=0.9, max_tokens=max_tokens, seed=seed),
            whole_reply=True)
        return "".join([chunk.text async for chunk in self.inference.Chat(request)]).strip()

    async def evaluate(self, held_out: list[dict[str, Any]], references: list[str], trigger: str, *,
                       base_model: str, tuned_model: str, max_tokens: int = 64, seed: int = 0,
                       train_samples: int | None = None, progress: Callable[[int, int], None] | None = None,
                       rule: GateRule = VOICE_RULE) -> dict[str, Any]:
        served = await self.inference.ListModels(inference_pb2.ListModelsRequest())
        slots = asyncio.Semaphore(max(1, served.max_concurrency))
        total, done = 2 * len(held_out), 0

        async def answer(model: str, sample: dict[str, Any]) -> str:
            nonlocal done
            async with slots:
                reply = await self._reply(model, [{"role": "system", "content": trigger}, *sample["context"]],
                                          max_tokens, seed)
            done += 1
            if progress:
                progress(done, total)
            return reply

        replies: dict[str, list[str]] = {}
        for config, model in (("base", base_model), ("tuned", tuned_model)):  # one model at a time (llama.cpp)
            replies[config] = list(await asyncio.gather(*(answer(model, s) for s in held_out)))
        replies["real"] = [s["reply"] for s in held_out]
        styles_yaml = probe_styles_yaml(references, trigger)
        scores: dict[str, list[float]] = {}
        rows = []
        for config in CONFIGS:
            scored = await self.validator.Score(validator_pb2.ScoreRequest(
                texts=replies[config], style=VOICE_STYLE, styles_yaml=styles_yaml))
            scores[config] = [s.style_margin for s in scored.scores]
            rows.append({"config": config, "model": {"base": base_model, "tuned": tuned_model,
                                                     "real": "the person"}[config],
                         "voice_score": round(fmean(scores[config]), 4) if scores[config] else 0.0,
                         "voice_accuracy": round(scored.style_accuracy, 4),
                         "mean_chars": round(fmean(len(r) for r in replies[config]), 1) if replies[config] else 0.0})
        verdict = judge_style(VOICE_STYLE, scores["tuned"], scores["base"], scores["real"], train_samples, rule)
        promoted, words = summarize([verdict])
        samples = [{"context": s["context"], "real": s["reply"], "base": replies["base"][i],
                    "tuned": replies["tuned"][i],
                    "scores": {c: round(scores[c][i], 4) for c in CONFIGS}}
                   for i, s in enumerate(held_out)]
        return {"kind": "voice", "table": rows, "verdicts": {VOICE_STYLE: verdict.to_json()},
                "promoted": promoted, "verdict": words.replace("closer to the style", "closer to the voice"),
                "samples": samples[:SHOWN_SAMPLES], "all_samples": samples, "classifier": "centroid probe"}

