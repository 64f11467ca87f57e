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
import time
from collections.abc import Callable, Sequence
from statistics import fmean
from typing import Any

from emotune.data.styles import StylesDocument, dump_styles
from emotune.fine_tuning.report import CONFIGS
from emotune.logging import get_logger
from emotune.services.pipeline.gate import (
    GateRule,
    ReplySense,
    StyleVerdict,
    judge_style,
    reply_reading,
    reply_sense,
    sense_columns,
    summarize,
)
from emotune.v1 import inference_pb2, inference_pb2_grpc, validator_pb2, validator_pb2_grpc

log = get_logger(__name__)
DEFAULT_RULE = GateRule()
SHOWN_SAMPLES = 3  # held-out questions per style whose three replies the report shows side by side
SCORE_WITH_JUDGE_DEADLINE_S = 900.0
DIALOGUES = 4  # held-out questions per style continued to a 3-turn dialogue (persona retention)
# The user's 2nd and 3rd turns of a retention dialogue: neutral, so they pull towards no style.
FOLLOW_UPS = {
    "zh": ("嗯……可是我还是有点放不下。", "那你觉得我接下来具体该怎么做？"),
    "en": ("Hmm... I still can't quite let it go.", "So what exactly should I do next?"),
}


class EvaluationReplies:
    """The evaluated models' replies (the sampling every evaluation uses), generated as many at once as the
    inference service has generation slots (more would only queue there), and the validator's readings of them;
    ``progress`` counts both: each reply written, and each reply the judge has read (its readings take about
    as long as the writing, and would otherwise be minutes without a line)."""

    def __init__(self, inference: inference_pb2_grpc.InferenceStub, slots: int, total: int, *, max_tokens: int,
                 seed: int, progress: Callable[[int, int], None] | None) -> None:
        self.inference, self.total, self.max_tokens, self.seed, self.progress = (
            inference, total, max_tokens, seed, progress)
        self.slots = asyncio.Semaphore(max(1, slots))
        self.done = 0

    @classmethod
    async def open(cls, inference: inference_pb2_grpc.InferenceStub, total: int, *, max_tokens: int, seed: int,
                   progress: Callable[[int, int], None] | None) -> EvaluationReplies:
        """Asks the inference service how many replies it generates at once."""
        served = await inference.ListModels(inference_pb2.ListModelsRequest())
        return cls(inference, served.max_concurrency, total, max_tokens=max_tokens, seed=seed, progress=progress)

    async def reply(self, model: str, messages: list[inference_pb2.ChatMessage]) -> tuple[str, bool]:
        """A reply, and whether it was cut at the token limit."""
        request = inference_pb2.ChatRequest(
            model=model, messages=messages,
            sampling=inference_pb2.SamplingParams(temperature=0.7, top_p=0.9, max_tokens=self.max_tokens,
                                                  seed=self.seed),
            whole_reply=True,
        )
        async with self.slots:
            chunks = [chunk async for chunk in self.inference.Chat(request)]
        self._count(1)
        return "".join(c.text for c in chunks).strip(), any(c.finish_reason == "length" for c in chunks)

    def _count(self, done: int) -> None:
        self.done += done
        if self.progress:
            self.progress(self.done, self.total)

    async def read(self, validator: validator_pb2_grpc.ValidatorStub, texts: list[str], style: str,
                   styles_yaml: str, questions: Sequence[str] = ()) -> validator_pb2.ScoreResponse:
        """The validator's scores; with questions its judge reads every reply (two model calls each, counted in
        ``progress``): far past the default unary deadline."""
        scored = await validator.Score(validator_pb2.ScoreRequest(texts=texts, style=style, styles_yaml=styles_yaml,
                                                                  questions=questions),
                                       timeout=SCORE_WITH_JUDGE_DEADLINE_S if questions else None)
        if questions:
            self._count(len(texts))
        return scored


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
        rule: GateRule = DEFAULT_RULE, tuned_styles: bool = False,
    ) -> dict[str, Any]:
        """``train_samples``: kept training samples per style (a style with too few is never promoted; None when
        unknown). ``tuned_styles``: the tuned model serves each style as ``<model>:<style>`` (its own adapter where
        it has one, the trigger as system prompt), which ``tuned_trigger`` then asks."""
        styles_yaml = scoring_styles(styles, selected)
        # each configuration's replies, written and then read by the judge, and its dialogues' two more turns
        total = len(selected) * len(CONFIGS) * (2 * len(questions) + 2 * len(questions[:DIALOGUES]))
        generation = await EvaluationReplies.open(self.inference, total, max_tokens=max_tokens, seed=seed,
                                                  progress=progress)
        run = _StyleRun(generation, self.validator, styles, styles_yaml, selected, questions,
                        {"base_trigger": base_model, "base_prompt": base_model, "tuned_trigger": tuned_model},
                        tuned_styles)
        return await run.report(train_samples, rule)


# One configuration's replies (and whether each was cut at the token limit), and its dialogues' third replies.
_Generated = tuple[list[tuple[str, bool]], list[str]]


class _StyleRun:
    """One style evaluation: every configuration's replies for every style, their scores, and the report."""

    def __init__(self, generation: EvaluationReplies, validator: validator_pb2_grpc.ValidatorStub,
                 styles: StylesDocument, styles_yaml: str, selected: list[str], questions: list[str],
                 models: dict[str, str], tuned_styles: bool = False) -> None:
        self.generation, self.validator = generation, validator
        self.styles, self.styles_yaml, self.selected, self.questions, self.models = (
            styles, styles_yaml, selected, questions, models)
        self.tuned_styles = tuned_styles
        self.dialogues = questions[:DIALOGUES]
        # per (style, config), one entry per question
        self.lifts: dict[tuple[str, str], list[float]] = {}
        self.sense: dict[tuple[str, str], list[ReplySense]] = {}
        self.readings: dict[tuple[str, str], list[dict[str, Any]]] = {}

    async def report(self, train_samples: dict[str, int] | None, rule: GateRule) -> dict[str, Any]:
        """Generates, scores, and judges every style."""
        started = time.monotonic()
        generated = await self._generate_all()
        generated_s = time.monotonic() - started
        results = {key: await self._score_config(*key, *replies) for key, replies in generated.items()}
        log.info("evaluation replies generated and scored", generated_s=round(generated_s, 1),
                 scored_s=round(time.monotonic() - started - generated_s, 1))
        rows: list[dict[str, Any]] = []
        samples: dict[str, dict[str, dict[str, str]]] = {}  # style -> question -> config -> reply
        for style in self.selected:
            for config in CONFIGS:
                row, replies = results[style, config]
                rows.append(row)
                for question, text in list(zip(self.questions, replies))[:SHOWN_SAMPLES]:
                    shown = samples.setdefault(style, {})
                    shown.setdefault(question, {"question": question})[config] = text
        judged = [self._judge(style, train_samples.get(style) if train_samples is not None else None, rule)
                  for style in self.selected]
        promoted, verdict = summarize(judged)
        verdicts = {v.style: v.to_json() for v in judged}
        measured = await self.validator.Instruments(validator_pb2.InstrumentsRequest())
        return {"table": rows, "instruments": json.loads(measured.measurement_json or "null"),
                "samples": {style: list(shown.values()) for style, shown in samples.items()},
                "all_samples": {style: [{"question": question, **{config: self.readings[style, config][i]
                                                                   for config in CONFIGS}}
                                        for i, question in enumerate(self.questions)] for style in self.selected},
                "verdicts": verdicts, "promoted": promoted, "verdict": verdict, "questions": self.questions}

    async def _generate_all(self) -> dict[tuple[str, str], _Generated]:
        """Every (style, configuration)'s replies and third replies.

        The configurations of one model at once, so the slots stay busy through each one's last, longest replies
        (one configuration after the other, a slot idled at every tail). Models one after the other: llama-server
        does not batch a request with a LoRA adapter together with one without. Scoring comes after all
        generation: the judge is another model server, and two llama.cpp servers busy at once on a small machine
        slowed each other several-fold.
        """
        generated: dict[tuple[str, str], _Generated] = {}
        keys = [(style, config) for style in self.selected for config in CONFIGS]
        for model in dict.fromkeys(self._target(*key)[0] for key in keys):
            group = [key for key in keys if self._target(*key)[0] == model]
            results = await asyncio.gather(*(self._generate(*key) for key in group))
            generated.update(zip(group, results, strict=True))
        return generated

    def _target(self, style: str, config: str) -> tuple[str, list[inference_pb2.ChatMessage]]:
        """The model name a configuration asks and the turns before the question."""
        if config == "tuned_trigger" and self.tuned_styles:
            return f"{self.models[config]}:{style}", []
        return self.models[config], _prompt(config, style, self.styles)

    async def _generate(self, style: str, config: str) -> _Generated:
        model, prefix = self._target(style, config)
        follow_ups = FOLLOW_UPS.get(self.styles.get(style).language, FOLLOW_UPS["en"])
        answered = list(await asyncio.gather(*(
            self.generation.reply(model, [*prefix, _message("user", question)]) for question in self.questions)))
        thirds = list(await asyncio.gather(*(
            self._third_reply(model, prefix, question, first, follow_ups)
            for question, (first, _) in zip(self.dialogues, answered, strict=False))))
        return answered, thirds

    async def _third_reply(self, model: str, prefix: list[inference_pb2.ChatMessage], question: str, first: str,
                           follow_ups: tuple[str, str]) -> str:
        """The dialogue's first reply is the single-turn one already generated (same prompt, same seed)."""
        turns = [*prefix, _message("user", question), _message("assistant", first)]
        for follow_up in follow_ups[:-1]:
            turns += [_message("user", follow_up), _message("assistant", (await self.generation.reply(model, [
                *turns, _message("user", follow_up)]))[0])]
        return (await self.generation.reply(model, [*turns, _message("user", follow_ups[-1])]))[0]

    async def _score_config(self, style: str, config: str, answered: list[tuple[str, bool]],
                            thirds: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The table row of one configuration's replies, and the replies."""
        replies = [text for text, _ in answered]
        scored = await self.generation.read(self.validator, replies, style, self.styles_yaml, self.questions)
        scored_thirds = await self.generation.read(self.validator, thirds, style, self.styles_yaml)
        key = style, config
        self.lifts[key] = [s.style_lift for s in scored.scores]
        self.sense[key] = [reply_sense(s, capped) for s, (_, capped) in zip(scored.scores, answered)]
        self.readings[key] = [reply_reading(text, s, read)
                              for text, s, read in zip(replies, scored.scores, self.sense[key])]
        return {
            "style": style, "config": config, "model": self._target(style, config)[0],
            "style_score": round(scored.style_score, 4),
            "similarity": round(scored.mean_similarity, 4),
            "style_accuracy": round(scored.style_accuracy, 4),
            "classifier": scored.classifier,
            **sense_columns(self.sense[key]),
            "marker_score": round(fmean(s.marker_score for s in scored.scores), 4) if replies else 0.0,
            "pass_rate": round(fmean(float(s.passed) for s in scored.scores), 4) if replies else 0.0,
            "turn3_score": round(scored_thirds.style_score, 4) if thirds else None,
        }, replies

    def _judge(self, style: str, train_samples: int | None, rule: GateRule) -> StyleVerdict:
        lifts, sense = self.lifts, self.sense
        return judge_style(style, lifts[style, "tuned_trigger"], lifts[style, "base_trigger"],
                           lifts[style, "base_prompt"], train_samples, rule,
                           tuned_sense=sense[style, "tuned_trigger"], base_sense=sense[style, "base_trigger"])
