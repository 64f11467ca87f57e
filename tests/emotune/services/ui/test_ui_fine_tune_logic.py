"""Fine-tune page logic: the job request it sends, and what it draws of a job (stages, loss, report)."""

import pytest

from emotune.services.ui.fine_tune import (
    Questions,
    Teacher,
    Training,
    ValidationView,
    build_job_request,
    evaluation_chart_spec,
    format_duration,
    loss_points,
    merge_events,
    stage_progress,
    validation_view,
)


def test_job_request_follows_the_fine_tuning_api():
    request = build_job_request(
        base_model="smollm2-135m", styles_yaml="styles: []", styles=["温柔"],
        questions=Questions(file_id="file-q", format="jsonl", field_path="q", inline=("extra?",), limit=30),
        teacher=Teacher(name="deepseek", model="deepseek-chat"),
        training=Training(n_epochs=3, batch_size=2, lora_r=4, max_steps=10), suffix=" emo ", seed=7,
        questions_per_style=2)
    assert request["model"] == "smollm2-135m" and request["suffix"] == "emo" and request["seed"] == 7
    assert request["hyperparameters"] == {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 1.0}
    ext = request["emotune"]
    assert ext["styles"] == ["温柔"] and ext["styles_yaml"] == "styles: []"
    assert ext["generation"]["questions"] == {"limit": 30, "file": "file-q", "format": "jsonl", "field_path": "q",
                                              "questions": ["extra?"]}
    assert ext["generation"]["teacher"] == {"name": "deepseek", "model": "deepseek-chat"}  # no key, no variable
    assert ext["training"]["lora"] == {"r": 4, "alpha": 16} and ext["training"]["max_steps"] == 10
    assert ext["evaluation"]["questions_per_style"] == 2
    # no teacher: the gateway's default; no suffix: none sent; api key never part of the request
    bare = build_job_request(base_model="m", styles_yaml="x", styles=[], questions=Questions(inline=("q",)),
                             teacher=None, training=Training())
    assert "teacher" not in bare["emotune"]["generation"] and "suffix" not in bare


def test_request_refuses_missing_questions_and_teacher_url():
    with pytest.raises(ValueError, match="no seed questions"):
        build_job_request(base_model="m", styles_yaml="x", styles=[], questions=Questions(), teacher=None,
                          training=Training())
    with pytest.raises(ValueError, match="by name"):
        build_job_request(base_model="m", styles_yaml="x", styles=[], questions=Questions(inline=("q",)),
                          teacher=Teacher(model="x"), training=Training())
    with pytest.raises(ValueError, match="http"):
        build_job_request(base_model="m", styles_yaml="x", styles=[], questions=Questions(inline=("q",)),
                          teacher=Teacher(base_url="ftp://x", model="x"), training=Training())
    own = Teacher(name="default", base_url="https://teacher.example.com/v1", model="m").spec()
    assert own == {"base_url": "https://teacher.example.com/v1", "model": "m"}  # a URL never travels with a name


EVENTS = [  # newest first, as the API pages them
    {"id": "e5", "created_at": 105, "message": "training: step 20", "type": "metrics",
     "data": {"stage": "training", "step": 20, "train_loss": 1.5, "valid_loss": 1.8, "done": 20, "total": 40,
              "eta_s": 75}},
    {"id": "e4", "created_at": 104, "message": "training: step 10", "type": "metrics",
     "data": {"stage": "training", "step": 10, "train_loss": 2.5, "done": 10, "total": 40, "eta_s": 150}},
    {"id": "e3", "created_at": 103, "message": "validation succeeded", "data": {"stage": "validation"}},
    {"id": "e2", "created_at": 102, "message": "datagen: 6/6", "data": {"stage": "datagen", "done": 6.0, "total": 6.0}},
    {"id": "e1", "created_at": 101, "message": "datagen started", "data": {"stage": "datagen"}},
]


def test_stage_progress_from_job_and_events():
    job = {"status": "running", "emotune": {"stage": "training",
                                            "stages": {"validating_files": "succeeded", "datagen": "succeeded",
                                                       "validation": "succeeded", "training": "running"}}}
    stages = {s.name: s for s in stage_progress(job, EVENTS)}
    assert list(stages) == ["validating_files", "datagen", "validation", "training", "serving", "evaluation"]
    assert stages["datagen"].fraction == 1.0 and stages["datagen"].label == "datagen: succeeded · 6/6"
    training = stages["training"]
    assert (training.done, training.total, training.eta_s) == (20, 40, 75)
    assert training.fraction == 0.5 and training.label == "training: running · 20/40 · ETA 1m15s"
    assert training.message == "training: step 20"
    assert stages["serving"].status == "pending" and stages["serving"].fraction == 0.0
    # the current stage counts as running before the job lists it; a stage the job skipped is not shown
    fresh = stage_progress({"status": "running", "emotune": {"stage": "training", "stages": {}}}, [])
    assert [(s.name, s.status) for s in fresh] == [("training", "running"), ("serving", "pending"),
                                                   ("evaluation", "pending")]
    # a finished job shows what it ran, including stages this page does not know
    done = stage_progress({"status": "failed", "emotune": {"stage": "export", "stages": {
        "training": "succeeded", "export": "failed"}}}, [])
    assert [(s.name, s.status) for s in done] == [("training", "succeeded"), ("export", "failed")]
    # one adapter per style: each style's training shows right under the training stage, with its own progress
    per_style = stage_progress({"status": "running", "emotune": {"stage": "training:毒舌", "stages": {
        "training:温柔": "succeeded", "datagen": "succeeded", "training": "running"}}}, [
        {"id": "p", "created_at": 1, "message": "training:毒舌: step 2", "data": {"stage": "training:毒舌", "done": 2,
                                                                                 "total": 12}}])
    assert [(s.name, s.status) for s in per_style] == [
        ("datagen", "succeeded"), ("training", "running"), ("training:温柔", "succeeded"), ("training:毒舌", "running"),
        ("serving", "pending"), ("evaluation", "pending")]
    assert (per_style[3].done, per_style[3].total) == (2, 12)


def test_events_merge_once_each_oldest_first():
    merged = merge_events(EVENTS[2:], EVENTS[:3])
    assert [e["id"] for e in merged] == ["e1", "e2", "e3", "e4", "e5"]


def test_loss_curve_from_report_or_live_events():
    live = loss_points(None, EVENTS)
    assert live == [{"step": 10, "split": "train", "loss": 2.5}, {"step": 20, "split": "train", "loss": 1.5},
                    {"step": 20, "split": "valid", "loss": 1.8}]
    # the trainer's events say "loss"; checkpoints say "train_loss"/"eval_loss"
    trainer_event = {"id": "t", "created_at": 1, "data": {"stage": "training", "step": 3.0, "loss": 2.9, "done": 3}}
    assert loss_points({}, [trainer_event]) == [{"step": 3, "split": "train", "loss": 2.9}]
    checkpoints = {"loss_curve": [{"step": 5.0, "train_loss": 3.0, "eval_loss": 3.2}]}
    assert loss_points(checkpoints, EVENTS) == [{"step": 5, "split": "train", "loss": 3.0},
                                                {"step": 5, "split": "valid", "loss": 3.2}]
    # the training report's curve wins over everything (shape of the trainer's report)
    report = {"training": {"loss_curve": {"eval": [{"step": 2.0, "loss": 3.1}],
                                          "train": [{"step": 1.0, "loss": 2.92}, {"step": 2.0, "loss": 2.8}]}},
              "loss_curve": [{"step": 9, "train_loss": 0.1}]}
    assert loss_points(report, EVENTS) == [{"step": 1, "split": "train", "loss": 2.92},
                                           {"step": 2, "split": "train", "loss": 2.8},
                                           {"step": 2, "split": "valid", "loss": 3.1}]


def test_validation_report_view():
    section = {  # the shape of the validator's report (trimmed)
        "reasons": {"low_similarity": 1.0},
        "counts": {"kept": 2.0, "rejected": 1.0, "total": 3.0, "input_errors": 0.0, "kept_share": 0.6667},
        "thresholds": {"dedup": 0.9623},
        "styles": {"pirate": {"reasons": {"low_similarity": 1.0}, "kept_share": 0.6667, "marker_score_kept": 1.0,
                              "max_similarity": {"median": 0.8546, "mean": 0.845},
                              "style_lift": {"median": 0.6929}, "total": 3.0, "kept": 2.0, "rejected": 1.0}},
    }
    view = validation_view(section)
    assert view.counts["kept"] == 2.0 and view.counts["kept_share"] == 0.6667
    assert view.reasons == {"low_similarity": 1.0}
    assert view.per_style == [{"style": "pirate", "kept": 2.0, "rejected": 1.0, "total": 3.0, "kept share": 0.6667,
                               "similarity (median)": 0.8546, "style lift (median)": 0.6929,
                               "marker score (kept)": 1.0}]
    assert validation_view(None) == validation_view({}) == ValidationView()


def test_evaluation_chart_spec():
    table = [{"style": "温柔", "config": "tuned_trigger", "model": "ft-m:温柔", "style_score": 0.8, "pass_rate": 1.0},
             {"style": "温柔", "config": "base_trigger", "model": "m:温柔", "style_score": 0.6, "pass_rate": 0.5}]
    assert evaluation_chart_spec(table) == ("style", "config", ["style_score", "pass_rate"])
    assert evaluation_chart_spec([{"name": "a", "score": 1}]) == ("name", None, ["score"])
    assert evaluation_chart_spec([]) == (None, None, [])


def test_durations():
    assert [format_duration(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]
