"""The style and voice evaluations against fake inference and validator services: what is generated in which
order (slots never exceeded, one model at a time, scoring after all generation), the progress each reply
reports, and the shape of the report the gate and the UI read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from emotune.data.styles import parse_styles
from emotune.fine_tuning.report import CONFIGS
from emotune.services.pipeline.evaluation import (
    DIALOGUES,
    FOLLOW_UPS,
    SCORE_WITH_JUDGE_DEADLINE_S,
    SHOWN_SAMPLES,
    StyleEvaluator,
)
from emotune.services.pipeline.voice_eval import VoiceEvaluator
from emotune.v1 import validator_pb2

EMOTIONS = Path(__file__).resolve().parents[4] / "examples" / "styles" / "emotions.yaml"
SLOTS = 3


class FakeInference:
    """Replies name their model and turn count; every fourth reply is cut at the token limit."""

    def __init__(self, log: list) -> None:
        self.log, self.in_flight, self.most_in_flight = log, 0, 0

    async def ListModels(self, request):
        return SimpleNamespace(max_concurrency=SLOTS)

    async def _chunks(self, request):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.log.append(("chat", request.model, [(m.role, m.content) for m in request.messages]))
        cut = len(self.log) % 4 == 0
        yield SimpleNamespace(text=f" {request.model} reply {len(request.messages)} ",
                              finish_reason="length" if cut else "stop")

    def Chat(self, request):
        return self._chunks(request)


class FakeValidator:
    def __init__(self, log: list) -> None:
        self.log = log

    async def Score(self, request, timeout=None):
        self.log.append(("score", list(request.texts), list(request.questions), timeout))
        scores = [validator_pb2.TextScore(style_lift=0.1 if "tuned" in text else 0.0, style_margin=0.02,
                                          predicted_style=request.style, passed=True, sense=0.9)
                  for text in request.texts]
        return validator_pb2.ScoreResponse(scores=scores, style_score=0.05, mean_similarity=0.5,
                                           style_accuracy=1.0, classifier="centroid (fake)")

    async def Instruments(self, request):
        return SimpleNamespace(measurement_json="")


async def test_the_style_evaluation_generates_per_model_then_scores_and_reports() -> None:
    styles = parse_styles(EMOTIONS.read_text(encoding="utf-8"))
    questions = [f"question {i}?" for i in range(6)]
    log: list = []
    inference, progress = FakeInference(log), []
    report = await StyleEvaluator(inference, FakeValidator(log)).evaluate(
        styles, ["温柔", "毒舌"], questions, base_model="base", tuned_model="tuned",
        progress=lambda done, total: progress.append((done, total)), train_samples={"温柔": 100})

    chats = [entry for entry in log if entry[0] == "chat"]
    written, read = 2 * len(CONFIGS) * (len(questions) + 2 * DIALOGUES), 2 * len(CONFIGS) * len(questions)
    assert len(chats) == written
    # a step per reply written, then per configuration the judge's readings of its first replies at once
    assert progress == [(done, written + read) for done in range(1, written + 1)] + [
        (written + len(questions) * k, written + read) for k in range(1, 2 * len(CONFIGS) + 1)]
    assert inference.most_in_flight <= SLOTS
    models = [model for _, model, _ in chats]
    assert models == sorted(models)  # the base model's replies, then the tuned model's
    assert all(entry[0] == "score" for entry in log[written:])  # scoring after all generation
    thirds = [messages for _, _, messages in chats if messages[-1][1] == FOLLOW_UPS["zh"][-1]]
    assert len(thirds) == 2 * len(CONFIGS) * DIALOGUES  # both styles speak zh
    assert all([content for role, content in m if role == "user"][-2:] == list(FOLLOW_UPS["zh"]) for m in thirds)
    timeouts = [entry[3] for entry in log if entry[0] == "score"]
    assert timeouts == [SCORE_WITH_JUDGE_DEADLINE_S, None] * 2 * len(CONFIGS)  # the judge reads the first replies

    assert [(row["style"], row["config"]) for row in report["table"]] == [
        (style, config) for style in ("温柔", "毒舌") for config in CONFIGS]
    assert all(row["turn3_score"] == 0.05 and row["sense"] == 0.9 for row in report["table"])
    assert [len(report["samples"][style]) for style in ("温柔", "毒舌")] == [SHOWN_SAMPLES] * 2
    first = report["all_samples"]["温柔"][0]
    assert first["question"] == questions[0] and first["tuned_trigger"]["reply"] == "tuned reply 2"
    assert set(report["verdicts"]) == {"温柔", "毒舌"} and report["promoted"] is False
    assert report["instruments"] is None and report["questions"] == questions


async def test_with_tuned_styles_the_tuned_model_is_asked_by_style_id_without_a_system_turn() -> None:
    """Per-style adapters: ``tuned:毒舌`` is served with the 毒舌 adapter and its trigger (the inference service
    adds it), so the evaluation sends no system turn of its own; the base configurations are unchanged."""
    styles = parse_styles(EMOTIONS.read_text(encoding="utf-8"))
    log: list = []
    report = await StyleEvaluator(FakeInference(log), FakeValidator(log)).evaluate(
        styles, ["温柔", "毒舌"], ["question 0?"], base_model="base", tuned_model="tuned", tuned_styles=True)

    chats = [(model, messages) for kind, model, messages in [e for e in log if e[0] == "chat"]]
    assert {model for model, _ in chats} == {"base", "tuned:温柔", "tuned:毒舌"}
    assert all(messages[0][0] == "user" for model, messages in chats if model.startswith("tuned:"))
    assert ("base", [("system", styles.get("毒舌").serving_prompt), ("user", "question 0?")]) in chats
    assert [row["model"] for row in report["table"] if row["config"] == "tuned_trigger"] == ["tuned:温柔", "tuned:毒舌"]
    first = report["all_samples"]["毒舌"][0]
    assert first["tuned_trigger"]["reply"] == "tuned:毒舌 reply 1"

async def test_the_voice_evaluation_shares_the_generation_and_scoring() -> None:
    held_out = [{"context": [{"role": "user", "content": f"hi {i}"}], "reply": f"real {i}"} for i in range(5)]
    contexts = [[{"role": "user", "content": f"context {i}"}] for i in range(2)]
    log: list = []
    progress = []
    report = await VoiceEvaluator(FakeInference(log), FakeValidator(log)).evaluate(
        held_out, ["ref"], "talk like me", base_model="base", tuned_model="tuned", probe_contexts=contexts,
        progress=lambda done, total: progress.append((done, total)))

    # 12 replies written (5 base, 5 tuned, 2 contrast), then three configurations' 5 replies read by the judge
    assert progress == [(done, 27) for done in range(1, 13)] + [(17, 27), (22, 27), (27, 27)]
    assert [entry[3] for entry in log if entry[0] == "score"] == [SCORE_WITH_JUDGE_DEADLINE_S] * 3
    assert [row["config"] for row in report["table"]] == ["base", "tuned", "real"]
    assert len(report["samples"]) == SHOWN_SAMPLES and len(report["all_samples"]) == len(held_out)
    assert report["probe"]["contrast_references"] == len(contexts)
