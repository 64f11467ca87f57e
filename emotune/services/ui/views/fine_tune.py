"""Fine-tune: styles file (edited or uploaded, validated with the pipeline's own schema) + seed questions +
teacher -> a fine-tuning job on the gateway; then its live per-stage progress, the validation report, the loss
curve, the evaluation table and chart, and links to chat with the resulting model."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from emotune.errors import InvalidInput
from emotune.services.ui import widgets
from emotune.services.ui.fine_tune import (
    GENERATION_MODES,
    QUESTION_FORMATS,
    QUESTIONS_PURPOSE,
    TERMINAL_STATUSES,
    Questions,
    Teacher,
    Training,
    build_job_request,
    evaluation_chart_spec,
    inline_questions,
    loss_points,
    merge_events,
    stage_progress,
    validation_view,
)
from emotune.services.ui.gateway_client import GatewayError
from emotune.services.ui.styles_check import check_styles, error_context, read_upload, styles_table

EXAMPLES_DIR = Path(__file__).resolve().parents[4] / "examples"
STYLES_PLACEHOLDER = """styles:
  - name: 温柔
    system_prompt: 你是一个温柔体贴的聊天助手……
    few_shot:
      - user: 今天好累
        assistant: 辛苦啦～先歇一会儿吧，我陪着你。
    reference_texts: [别着急，慢慢来，我一直都在呢。]
    temperature: 0.7"""
STATUS_ICONS = {"succeeded": "✅", "failed": "❌", "cancelled": "⏹️", "running": "⏳", "pending": "·"}

st.title("🛠️ Pipeline")
st.caption("Styles → generated data → validation → LoRA fine-tune → evaluation → a served model.")


@st.cache_data(show_spinner=False)
def example_styles() -> dict[str, str]:
    """Styles documents shipped in examples/ that pass validation, by file name."""
    found = {}
    for path in sorted(EXAMPLES_DIR.rglob("*")):
        if path.suffix in {".yaml", ".yml", ".json"} and check_styles(path.read_text("utf-8"), path.name).ok:
            found[str(path.relative_to(EXAMPLES_DIR))] = path.read_text("utf-8")
    return found


# ---------------------------------------------------------------------------------------------- 1. styles
st.header("1 · Styles")
examples = example_styles()
upload_col, example_col = st.columns(2)
upload = upload_col.file_uploader("Upload a styles file (YAML or JSON)", type=["yaml", "yml", "json"],
                                  key="styles_upload")
if examples:
    example = example_col.selectbox("…or start from an example", ["—", *examples], key="styles_example")
    if example != "—" and st.session_state.get("styles_loaded") != f"example:{example}":
        st.session_state["styles_text"] = examples[example]
        st.session_state["styles_loaded"] = f"example:{example}"
styles_source = "styles.yaml"
if upload is not None:
    styles_source = upload.name
    if st.session_state.get("styles_loaded") != f"upload:{upload.file_id}":
        try:
            st.session_state["styles_text"] = read_upload(upload.name, upload.getvalue())
        except InvalidInput as err:
            st.session_state["styles_text"] = ""
            st.error(f"Cannot read {upload.name}: {err.message}", icon="📄")
        st.session_state["styles_loaded"] = f"upload:{upload.file_id}"

styles_text = st.text_area("Styles document", key="styles_text", height=300, placeholder=STYLES_PLACEHOLDER)
check = check_styles(styles_text, styles_source)
if check.ok:
    st.success(f"{len(check.document.styles)} style(s) valid: {', '.join(check.document.names)}", icon="✅")
    st.dataframe(pd.DataFrame(styles_table(check.document)), hide_index=True)
elif styles_text.strip():
    err = check.error
    where = " · ".join(p for p in (f"line {err.line}" if err.line else "", f"field `{err.field}`" if err.field
                                   else "") if p)
    st.error(f"**Invalid styles document** ({where or err.file}): {err.reason}", icon="🚫")
    if err.line:
        st.code(error_context(styles_text, err.line), language=None)

# ---------------------------------------------------------------------------------------------- 2. questions
st.header("2 · Seed questions")
question_mode = st.radio("Source", ["Type them", "Upload a file"], horizontal=True, key="questions_mode")
if question_mode == "Type them":
    typed = inline_questions(st.text_area("One question per line", key="questions_text", height=120))
    question_file, question_format, field_path = None, "lines", ""
    st.caption(f"{len(typed)} question(s)")
else:
    typed = ()
    question_file = st.file_uploader("Question file", key="questions_upload",
                                     type=["txt", "json", "jsonl", "csv"])
    fmt_col, path_col = st.columns(2)
    question_format = fmt_col.selectbox(
        "Format", QUESTION_FORMATS, key="questions_format",
        help="lines / lccc: one per line; json / jsonl: pick a field; chatgpt: conversations.json export; "
             "wechat: sharegpt-style export")
    field_path = path_col.text_input("Field path (json/jsonl)", key="questions_field", placeholder="question")
question_file_id = None
if question_file is not None:
    # Uploaded as soon as chosen, like any OpenAI file: the gateway checks it and names the bad line now.
    uploads: dict = st.session_state.setdefault("questions_uploaded", {})
    if question_file.file_id not in uploads:
        try:
            uploads[question_file.file_id] = widgets.gateway().upload_file(
                question_file.name, question_file.getvalue(), QUESTIONS_PURPOSE)
        except GatewayError as err:
            widgets.show_error(err)
    uploaded = uploads.get(question_file.file_id)
    if uploaded:
        question_file_id = uploaded["id"]
        lines = (uploaded.get("emotune") or {}).get("lines")
        st.caption(f"Uploaded as `{question_file_id}`" + (f" ({lines} lines)" if lines else ""))
question_limit = st.number_input("Use at most (0 = all)", 0, 100_000, 30, key="questions_limit")

# ---------------------------------------------------------------------------------------------- 3. teacher
st.header("3 · Teacher")
ui_settings = widgets.settings()
teacher_kind = st.radio(
    "Who writes the styled answers", ["emotune default", "A named teacher"]
    + (["A URL of my own"] if ui_settings.ui_teacher_url_field else []), horizontal=True, key="teacher_kind",
    help="emotune default: ZhipuAI if the pipeline service holds a key, else the base model emotune serves "
         "itself. Named teachers are set up by the operator (endpoint and key stay on the server).")
teacher: Teacher | None = None
if teacher_kind == "A named teacher":
    name_col, model_col = st.columns(2)
    teacher = Teacher(
        name=name_col.selectbox("Teacher", ui_settings.ui_teachers, key="teacher_name"),
        model=model_col.text_input("Model (empty = the teacher's own)", key="teacher_model"),
    )
elif teacher_kind == "A URL of my own":
    url_col, model_col = st.columns(2)
    teacher = Teacher(
        base_url=url_col.text_input("OpenAI-compatible base URL", key="teacher_base_url",
                                    placeholder="https://…/v1",
                                    help="Called with no API key, public addresses only."),
        model=model_col.text_input("Model", key="teacher_url_model"),
    )

# ---------------------------------------------------------------------------------------------- 4. training
st.header("4 · Model and training")
try:
    base_models = [c.name for c in widgets.models() if c.plain and not c.fine_tuned]
except GatewayError as err:
    widgets.show_error(err)
    base_models = []
model_col, suffix_col, mode_col = st.columns(3)
base_model = model_col.selectbox("Base model", base_models, key="train_base_model")
suffix = suffix_col.text_input("Suffix", "emo", key="train_suffix", max_chars=40)
mode = mode_col.selectbox("Generation mode", GENERATION_MODES, key="train_mode")
chosen_styles = st.multiselect("Styles to train (empty = all)", check.document.names if check.ok else [],
                               key="train_styles")
c1, c2, c3, c4, c5 = st.columns(5)
training = Training(
    n_epochs=c1.number_input("Epochs", 1, 100, 2, key="train_epochs"),
    batch_size=c2.number_input("Batch size", 1, 256, 4, key="train_batch"),
    learning_rate_multiplier=c3.number_input("LR multiplier", 0.01, 100.0, 1.0, key="train_lr"),
    lora_r=c4.number_input("LoRA r", 1, 256, 8, key="train_lora_r"),
    max_steps=c5.number_input("Max steps (0 = epochs)", 0, 1_000_000, 0, key="train_max_steps"),
)
eval_col, gate_col = st.columns(2)
eval_per_style = eval_col.number_input("Evaluation questions per style (0 = skip)", 0, 100, 5, key="train_eval")
must_beat_base = gate_col.checkbox(
    "Serve the result only if it beats the base model", True, key="train_gate",
    help="Evaluation compares the style score of the tuned model with the base model prompted with the style.")

if st.button("🚀 Launch fine-tuning job", type="primary", key="launch",
             disabled=not (check.ok and base_model)):
    try:
        questions = Questions(file_id=question_file_id, inline=typed, format=question_format,
                              field_path=field_path, limit=question_limit)
        request = build_job_request(base_model=base_model, styles_yaml=styles_text, styles=chosen_styles,
                                    questions=questions, teacher=teacher, training=training, suffix=suffix,
                                    mode=mode, questions_per_style=eval_per_style,
                                    gate="beat_base" if must_beat_base else "none")
        job = widgets.gateway().create_job(request)
    except ValueError as err:
        st.error(str(err), icon="🚫")
    except GatewayError as err:
        widgets.show_error(err)
    else:
        st.session_state["job_id"] = job["id"]
        st.query_params["job"] = job["id"]
        st.session_state.pop("job_events", None)

# ---------------------------------------------------------------------------------------------- 5. the job
st.header("5 · Job")
try:
    recent = widgets.gateway().list_jobs()
except GatewayError as err:
    widgets.show_error(err)
    recent = []
job_id = st.session_state.get("job_id") or st.query_params.get("job")
ids = [j["id"] for j in recent]
if job_id and job_id not in ids:
    ids.insert(0, job_id)
if not ids:
    st.info("No fine-tuning job yet.")
    st.stop()
picked = st.selectbox("Job", ids, index=ids.index(job_id) if job_id in ids else 0, key="job_pick")
if picked != st.session_state.get("job_id"):
    st.session_state["job_id"] = picked
    st.query_params["job"] = picked
    st.session_state.pop("job_events", None)


def draw_loss(rows: list[dict]) -> None:
    if not rows:
        st.caption("No loss reported yet.")
        return
    chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        color=alt.Color("split:N", title=None), tooltip=["step", "split", "loss"])
    st.altair_chart(chart)


def show_job(job_id: str) -> None:
    """Everything about one job; re-run every few seconds (as a fragment) while the job is not finished."""
    gateway = widgets.gateway()
    try:
        job = gateway.job(job_id)
        known = st.session_state.get("job_events", [])
        events = merge_events(known, gateway.new_events(job_id, {e["id"] for e in known}))
        st.session_state["job_events"] = events
    except GatewayError as err:
        widgets.show_error(err)
        return
    status = job["status"]
    if status in TERMINAL_STATUSES and st.session_state.get("job_live") == job_id:
        st.session_state["job_live"] = None
        widgets.refresh_models()  # a finished job may serve a new model
        st.rerun()  # leave the live fragment: draw the final report once

    head, cancel_col = st.columns([5, 1])
    head.subheader(f"{STATUS_ICONS.get(status, '')} `{job_id}` · {status}")
    if status not in TERMINAL_STATUSES and cancel_col.button("Cancel job", key="job_cancel"):
        try:
            gateway.cancel_job(job_id)
        except GatewayError as err:
            widgets.show_error(err)
    if job.get("error"):
        st.error(f"{job['error'].get('code')}: {job['error'].get('message')}", icon="❌")
    for stage in stage_progress(job, events):
        st.progress(stage.fraction, text=f"{STATUS_ICONS.get(stage.status, '')} {stage.label}"
                                         + (f" — {stage.message}" if stage.message and stage.status == "running"
                                            else ""))

    report = gateway.report(job_id) if status in TERMINAL_STATUSES or events else None
    st.subheader("Loss")
    draw_loss(loss_points(report, events))
    if report:
        show_report(job_id, job, report)
    with st.expander(f"Event log ({len(events)})"):
        st.dataframe(pd.DataFrame([{"time": pd.to_datetime(e["created_at"], unit="s"), "level": e.get("level"),
                                    "message": e.get("message")} for e in reversed(events)]), hide_index=True)


def show_report(job_id: str, job: dict, report: dict) -> None:
    gateway = widgets.gateway()
    validation = validation_view(report.get("validation"))
    if validation.counts or validation.per_style:
        st.subheader("Validation")
        for column, (name, value) in zip(st.columns(max(1, len(validation.counts))), validation.counts.items()):
            column.metric(name.replace("_", " "), f"{value:g}")
        if validation.per_style:
            st.dataframe(pd.DataFrame(validation.per_style), hide_index=True)
        if validation.reasons:
            st.caption("Rejected samples by reason")
            st.bar_chart(pd.Series(validation.reasons, name="samples"), horizontal=True)
        with st.expander("Full validation report"):
            st.json(report.get("validation"), expanded=False)
    plots = report.get("plots") or {}
    if plots:
        st.subheader("Plots")
        columns = st.columns(2)
        for i, (name, url) in enumerate(plots.items()):
            try:
                columns[i % 2].image(gateway.plot(url, job_id), caption=name, width="stretch")
            except GatewayError as err:
                columns[i % 2].warning(f"{name}: {err.message}")
    evaluation = report.get("evaluation") or {}
    table = evaluation.get("table") or []
    if table:
        st.subheader("Evaluation")
        if "promoted" in evaluation:
            (st.success if evaluation["promoted"] else st.warning)(
                f"{'Promoted' if evaluation['promoted'] else 'Not promoted'}: {evaluation.get('verdict', '')}")
        frame = pd.DataFrame(table)
        st.dataframe(frame, hide_index=True)
        category, series, metrics = evaluation_chart_spec(table)
        if category and metrics:
            metric = st.selectbox("Metric", metrics, key="eval_metric")
            chart = alt.Chart(frame).mark_bar().encode(
                x=alt.X(f"{category}:N", title=category), y=alt.Y(f"{metric}:Q"),
                xOffset=f"{series}:N" if series else alt.Undefined,
                color=alt.Color(f"{series}:N" if series else f"{category}:N"), tooltip=list(frame.columns))
            st.altair_chart(chart)
    model = job.get("fine_tuned_model")
    if model:
        st.subheader("Chat with the result")
        try:
            served = {c.name: c for c in widgets.models()}.get(model)
        except GatewayError as err:
            widgets.show_error(err)
            return
        if served is None:
            st.warning(f"`{model}` is not served (any more): the gateway does not list it.")
        else:
            for style in served.style_options:
                model_id = served.model_id(style)
                st.page_link("views/chat.py", label=f"💬 {model_id}", query_params={"model": model_id})


try:
    finished = widgets.gateway().job(picked)["status"] in TERMINAL_STATUSES
except GatewayError:
    finished = True  # show_job shows the error
if finished:
    show_job(picked)
else:
    st.session_state["job_live"] = picked
    st.fragment(run_every=widgets.settings().ui_poll_seconds)(show_job)(picked)
