"""Style evaluation: does the fine-tuned model speak the style better than the base model?

On held-out questions, per style, three configurations answer:
- ``base_trigger``: the base model with only the short serving trigger (what a user gets without fine-tuning),
- ``base_prompt``: the base model with the style's full system prompt and few-shot turns (prompting's best),
- ``tuned_trigger``: the fine-tuned model with only the trigger (what fine-tuning buys).
The validator's ``Score`` rates every reply (similarity to the style's reference texts, markers, the style
classifier). The style score of a configuration is the validator's ``style_score``, the mean of the replies'
style lifts (how much closer a reply is to the style's references than neutral text is — far more sensitive
than the raw cosine). The gate (:mod:`.gate`) compares tuned_trigger with base_trigger question by question.

Persona retention over a dialogue: a prompted persona often fades after a turn or two. For the first
``DIALOGUES`` held-out questions each configuration goes on for two more user turns (fixed, style-neutral
follow-ups), and the third replies are scored too (``turn3_score`` in the table).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from statistics import fmean
from typing import Any

from emotune.data.styles import StylesDocument, dump_styles
from emotune.fine_tuning.report import CONFIGS
from emotune.services.pipeline.gate import (
    GateRule,
    ReplySense,
    judge_style,
    reply_reading,
    reply_sense,
    sense_columns,
    summarize,
)
from emotune.v1 import inference_pb2, inference_pb2_grpc, validator_pb2, validator_pb2_grpc

DEFAULT_RULE = GateRule()
SHOWN_SAMPLES = 3  # held-out questions per style whose three replies the report shows side by side
SCORE_WITH_JUDGE_DEADLINE_S = 900.0


async def evaluation_reply(inference: inference_pb2_grpc.InferenceStub, model: str,
                           messages: list[inference_pb2.ChatMessage], max_tokens: int, seed: int) -> tuple[str, bool]:
    """An evaluated model's reply (the sampling every evaluation uses), and whether it was cut at the token limit."""
    request = inference_pb2.ChatRequest(
        model=model, messages=messages,
        sampling=inference_pb2.SamplingParams(temperature=0.7, top_p=0.9, max_tokens=max_tokens, seed=seed),
        whole_reply=True,
    )
    chunks = [chunk async for chunk in inference.Chat(request)]
    return "".join(c.text for c in chunks).strip(), any(c.finish_reason == "length" for c in chunks)
DIALOGUES = 4  # held-out questions per style continued to a 3-turn dialogue (persona retention)
# The user's 2nd and 3rd turns of a retention dialogue: neutral, so they pull towards no style.
FOLLOW_UPS = {
    "zh": ("嗯……可是我还是有点放不下。", "那你觉得我接下来具体该怎么做？"),
    "en": ("Hmm... I still can't quite let it go.", "So what exactly should I do next?"),
}


def _message(role: str, content: str) -> inference_pb2.ChatMessage:
    return inference_pb2.ChatMessage(role=role, content=content)


def _prompt(config: str, style_name: str, styles: StylesDocument) -> list[inference_pb2.ChatMessage]:
    """What precedes the user's question: the full prompt + few-shot turns (``base_prompt``, exactly what the
    context-distillation teacher saw) or only the serving trigger (what the student was trained with)."""
    style = styles.get(style_name)
    if config == "base_prompt":
        turns = [_message("system", style.system_prompt)]
        for shot in style.few_shot:
            turns += [_message("user", shot.user), _message("assistant", shot.assistant)]
        return turns
    return [_message("system", style.serving_prompt)]


def scoring_styles(styles: StylesDocument, selected: list[str]) -> str:
    """The styles the validator scores replies against. Its classifier (``accuracy``) asks which of the *job's*
    styles a reply reads as, when the job trains two or more: a 毒舌 reply is judged against 温柔, not also against
    傲娇 that the job never trained (whose references are closer to 毒舌 than 温柔's are). With one style, against
    the whole document."""
    if len(selected) < 2:
        return dump_styles(styles)
    return dump_styles(StylesDocument(version=styles.version, styles=[styles.get(name) for name in selected]))


class StyleEvaluator:
    def __init__(self, inference: inference_pb2_grpc.InferenceStub, validator: validator_pb2_grpc.ValidatorStub):
        self.inference, self.validator = inference, validator

    async def evaluate(
        self, styles: StylesDocument, selected: list[str], questions: list[str], *,
        base_model: str, tuned_model: str, max_tokens: int = 96, seed: int = 0,
        progress: Callable[[int, int], None] | None = None, train_samples: dict[str, int] | None = None,
        rule: GateRule = DEFAULT_RULE,
    ) -> dict[str, Any]:
        """Replies are generated as many at once as the inference service has generation slots (more would only
        queue there). ``train_samples``: kept training samples per style (a style with too few is never
        promoted; None when unknown)."""
        styles_yaml = scoring_styles(styles, selected)
        served = await self.inference.ListModels(inference_pb2.ListModelsRequest())
        slots = asyncio.Semaphore(max(1, served.max_concurrency))
        models = {"base_trigger": base_model, "base_prompt": base_model, "tuned_trigger": tuned_model}
        dialogues = questions[:DIALOGUES]
        total, done = len(selected) * len(CONFIGS) * (len(questions) + 2 * len(dialogues)), 0
        rows: list[dict[str, Any]] = []
        samples: dict[str, dict[str, dict[str, str]]] = {}  # style -> question -> config -> reply
        lifts: dict[tuple[str, str], list[float]] = {}
        sense: dict[tuple[str, str], list[ReplySense]] = {}
        readings: dict[tuple[str, str], list[dict[str, Any]]] = {}

        async def answer(model: str, messages: list[inference_pb2.ChatMessage]) -> str:
            return (await answer_capped(model, messages))[0]

        async def answer_capped(model: str, messages: list[inference_pb2.ChatMessage]) -> tuple[str, bool]:
            nonlocal done
            async with slots:
                reply = await evaluation_reply(self.inference, model, messages, max_tokens, seed)
            done += 1
            if progress:
                progress(done, total)
            return reply

        async def third_reply(model: str, prefix: list[inference_pb2.ChatMessage], question: str, first: str,
                              follow_ups: tuple[str, str]) -> str:
            """The dialogue's first reply is the single-turn one already generated (same prompt, same seed)."""
            turns = [*prefix, _message("user", question), _message("assistant", first)]
            for follow_up in follow_ups[:-1]:
                turns += [_message("user", follow_up), _message("assistant", await answer(model, [
                    *turns, _message("user", follow_up)]))]
            return await answer(model, [*turns, _message("user", follow_ups[-1])])

        async def score(style: str, texts: list[str], asked: list[str] = ()) -> validator_pb2.ScoreResponse:
            """With questions the validator's judge reads every reply (two model calls each, sharing the inference
            slots with the generations still running): far past the default unary deadline."""
            return await self.validator.Score(validator_pb2.ScoreRequest(texts=texts, style=style,
                                                                         styles_yaml=styles_yaml, questions=asked),
                                              timeout=SCORE_WITH_JUDGE_DEADLINE_S if asked else None)

        async def generate(style: str, config: str) -> tuple[list[tuple[str, bool]], list[str]]:
            """One configuration's replies (and whether each hit the token limit), and its dialogues' third
            replies."""
            prefix = _prompt(config, style, styles)
            follow_ups = FOLLOW_UPS.get(styles.get(style).language, FOLLOW_UPS["en"])
            answered = list(await asyncio.gather(*(
                answer_capped(models[config], [*prefix, _message("user", question)]) for question in questions)))
            thirds = list(await asyncio.gather(*(
                third_reply(models[config], prefix, question, first, follow_ups)
                for question, (first, _) in zip(dialogues, answered, strict=False))))
            return answered, thirds

        async def score_config(style: str, config: str, answered: list[tuple[str, bool]],
                               thirds: list[str]) -> tuple[dict[str, Any], list[str]]:
            """The scores of one configuration's replies."""
            replies = [text for text, _ in answered]
            scored, scored_thirds = await score(style, replies, questions), await score(style, thirds)
            lifts[style, config] = [s.style_lift for s in scored.scores]
            sense[style, config] = [reply_sense(s, capped) for s, (_, capped) in zip(scored.scores, answered)]
            readings[style, config] = [reply_reading(text, s, read)
                                       for text, s, read in zip(replies, scored.scores, sense[style, config])]
            return {
                "style": style, "config": config, "model": models[config],
                "style_score": round(scored.style_score, 4),
                "similarity": round(scored.mean_similarity, 4),
                "style_accuracy": round(scored.style_accuracy, 4),
                "classifier": scored.classifier,
                **sense_columns(sense[style, config]),
                "marker_score": round(fmean(s.marker_score for s in scored.scores), 4) if replies else 0.0,
                "pass_rate": round(fmean(float(s.passed) for s in scored.scores), 4) if replies else 0.0,
                "turn3_score": round(scored_thirds.style_score, 4) if thirds else None,
            }, replies

        # The configurations of one model at once, so the slots stay busy through each one's last, longest
        # replies (one configuration after the other, a slot idled at every tail). Models one after the other:
        # llama-server does not batch a request with a LoRA adapter together with one without. Scoring comes after
        # all generation: the judge is another model server, and two llama.cpp servers busy at once on a small
        # machine slowed each other several-fold.
        generated: dict[tuple[str, str], tuple[list[tuple[str, bool]], list[str]]] = {}
        for model in dict.fromkeys(models.values()):
            group = [(style, config) for style in selected for config in CONFIGS if models[config] == model]
            for key, result in zip(group, await asyncio.gather(*(generate(*key) for key in group)), strict=True):
                generated[key] = result
        results = {key: await score_config(*key, *replies) for key, replies in generated.items()}
        for style in selected:
            for config in CONFIGS:
                row, replies = results[style, config]
                rows.append(row)
                for question, text in list(zip(questions, replies))[:SHOWN_SAMPLES]:
                    shown = samples.setdefault(style, {})
                    shown.setdefault(question, {"question": question})[config] = text
        judged = [judge_style(style, lifts[style, "tuned_trigger"], lifts[style, "base_trigger"],
                              lifts[style, "base_prompt"],
                              train_samples.get(style) if train_samples is not None else None, rule,
                              tuned_sense=sense[style, "tuned_trigger"], base_sense=sense[style, "base_trigger"])
                  for style in selected]
        promoted, verdict = summarize(judged)
        verdicts = {v.style: v.to_json() for v in judged}
        measured = await self.validator.Instruments(validator_pb2.InstrumentsRequest())
        return {"table": rows, "instruments": json.loads(measured.measurement_json or "null"),
                "samples": {style: list(shown.values()) for style, shown in samples.items()},
                "all_samples": {style: [{"question": question, **{config: readings[style, config][i]
                                                                   for config in CONFIGS}}
                                        for i, question in enumerate(questions)] for style in selected},
                "verdicts": verdicts, "promoted": promoted, "verdict": verdict, "questions": questions}
