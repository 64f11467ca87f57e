"""``emotune voice ...``: fine-tune a model on your own chat history (``docs/voice.md``).

- ``inspect EXPORT`` — read and clean an export here, print the cleaning report (nothing is uploaded).
- ``submit EXPORT`` — upload it to a running gateway, create the voice job, follow it, print the evaluation.
- ``local EXPORT`` — start the embedded default (every service on loopback) and run the voice job end to end
  (``scripts/run-local.sh --voice EXPORT``).
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import typer
from openai import OpenAI
from rich.console import Console

from emotune.models.basemodels import DEFAULT_BASE_MODEL

app = typer.Typer(help="Fine-tune on your own chat history (WeChat, ChatGPT exports).", no_args_is_help=True)
console = Console(soft_wrap=True)

Speaker = typer.Option("", "--speaker", help="whose voice: WeChat 'me' (default) or a name; ChatGPT 'assistant' "
                                             "(default) or 'user'")
Source = typer.Option("auto", "--source", help="auto, wechat-json, wechat-csv or chatgpt")
ContextTurns = typer.Option(4, "--context-turns", help="earlier turns a sample keeps as context")
SessionGap = typer.Option(60.0, "--session-gap-minutes", help="a new session after a longer silence")
PersonalData = typer.Option("mask", "--personal-data", help="mask (default) or drop messages with personal data")
Openings = typer.Option(None, "--openings", metavar="TEACHER",
                        help="seed 003's step, off when absent: this named teacher ('default': the stack's) writes "
                             "the other side's opening before each training sample; your words are never changed")


@dataclass
class VoiceRunOptions:
    export: Path
    base_model: str = DEFAULT_BASE_MODEL
    speaker: str = ""
    source: str = "auto"
    context_turns: int = 4
    session_gap_minutes: float = 60.0
    personal_data: str = "mask"
    held_out_fraction: float = 0.2
    held_out_samples: int = 16
    epochs: int = 3
    # The offline main job's supervised rate for a few steps on ~100 short replies (emotune.local.demo).
    learning_rate: float = 1e-3
    max_steps: int = 0
    max_length: int = 256
    max_tokens: int = 64
    openings: str | None = None  # the named teacher that writes openings (docs/voice.md); None: off
    seed: int = 7
    suffix: str = "voice"
    gate: str = "beat_base"
    timeout_s: float = 3600.0
    extra: dict = field(default_factory=dict)

    def voice_options(self) -> dict:
        return {"source": self.source, "speaker": self.speaker, "context_turns": self.context_turns,
                "session_gap_minutes": self.session_gap_minutes, "personal_data": self.personal_data,
                "held_out_fraction": self.held_out_fraction, "held_out_samples": self.held_out_samples,
                "max_tokens": self.max_tokens,
                **({"context_teacher": {"name": self.openings}} if self.openings is not None else {})}


def export_upload(path: Path) -> tuple[str, bytes]:
    """(file name, bytes) to upload: a file as it is, a folder zipped."""
    if path.is_file():
        return path.name, path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            archive.write(file, (Path(path.name) / file.relative_to(path)).as_posix())
    return f"{path.name}.zip", buffer.getvalue()


def submit_voice_job(client: OpenAI, options: VoiceRunOptions):
    name, content = export_upload(options.export)
    uploaded = client.files.create(file=(name, content), purpose="emotune-voice")
    return uploaded, client.fine_tuning.jobs.create(
        model=options.base_model, training_file=uploaded.id, suffix=options.suffix, seed=options.seed,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": options.epochs,
                                                                           "batch_size": 4}}},
        extra_headers={"Idempotency-Key": f"voice-{uuid.uuid4().hex}"},
        extra_body={"emotune": {
            "voice": options.voice_options(),
            "training": {"learning_rate": options.learning_rate, "max_steps": options.max_steps,
                         "max_length": options.max_length, "eval_fraction": 0.0},
            "evaluation": {"gate": options.gate},
            **options.extra,
        }},
    )


def run_voice(client: OpenAI, gateway_url: str, api_key: str, options: VoiceRunOptions,
              out: Console | None = None) -> dict:
    from emotune.local.demo import follow
    from emotune.voice.report import format_voice_table

    out = out or console
    uploaded, job = submit_voice_job(client, options)
    summary = uploaded.model_extra.get("emotune", {}) if uploaded.model_extra else {}
    out.print(f"uploaded {uploaded.filename} ({summary.get('format')}: {summary.get('voice_messages')} messages "
              f"of the voice); voice job [bold]{job.id}[/] created ({options.base_model})")
    job = follow(client, job.id, out, options.timeout_s)
    events = client.fine_tuning.jobs.list_events(job.id, limit=200).data
    report_lines = [e.message for e in reversed(events) if e.message.startswith("voice: ")]
    out.rule("cleaning report")
    for line in report_lines:
        out.print(line.removeprefix("voice: "), markup=False, highlight=False)
    if job.status != "succeeded":
        out.print(f"[red]job {job.id} {job.status}: {job.error.message if job.error else job.status}[/]")
        return {"job": job, "report": None}
    report = httpx.get(f"{gateway_url}/v1/fine_tuning/jobs/{job.id}/report",
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
    evaluation = report.get("evaluation") or {}
    if evaluation:
        out.rule("voice evaluation (held-out sessions, never trained on)")
        out.print(format_voice_table(evaluation), markup=False, highlight=False)
        out.rule("side by side (held-out context: the real reply, the base model's, the tuned model's)")
        for sample in evaluation.get("samples", []):
            for message in sample["context"]:
                who = "them" if message["role"] == "user" else "you "
                out.print(f"  {who}: {message['content']}".replace("\n", " / "), markup=False)
            for config in ("real", "base", "tuned"):
                out.print(f"    {config:<5} ({sample['scores'][config]:+.3f}): {sample[config]}".replace("\n", " / "),
                          markup=False)
    out.print(f"chat with it: model {job.fine_tuned_model}:voice (the trigger is sent for you)", markup=False)
    return {"job": job, "report": report}


def _options(export: Path, **kwargs) -> VoiceRunOptions:
    return VoiceRunOptions(export=export, **{k: v for k, v in kwargs.items() if v is not None})


@app.command()
def inspect(export: Path = typer.Argument(..., exists=True, help="folder, zip, CSV or conversations.json"),
            speaker: str = Speaker, source: str = Source, context_turns: int = ContextTurns,
            session_gap_minutes: float = SessionGap, personal_data: str = PersonalData,
            samples: int = typer.Option(3, help="training samples to show")) -> None:
    """Read and clean an export here and print the cleaning report (nothing leaves this machine)."""
    from emotune.fine_tuning.protocol import VoiceOptions
    from emotune.voice.job import prepare

    options = VoiceOptions(source=source, speaker=speaker, context_turns=context_turns,
                           session_gap_minutes=session_gap_minutes, personal_data=personal_data)
    data = prepare(None, str(export), options, path=str(export))
    for line in data.report.lines():
        console.print(line, markup=False, highlight=False)
    for record in data.records[:samples]:
        console.rule(record.id)
        for message in record.messages:
            console.print(f"  {message.role}: {message.content}".replace("\n", " / "), markup=False)


@app.command()
def submit(export: Path = typer.Argument(..., exists=True), gateway: str = typer.Option(
               "http://127.0.0.1:8000", "--gateway", envvar="EMOTUNE_GATEWAY_URL"),
           api_key_file: Path = typer.Option(Path("var/api-key"), "--api-key-file"),
           model: str = typer.Option(DEFAULT_BASE_MODEL, "--model"), speaker: str = Speaker,
           source: str = Source, context_turns: int = ContextTurns, session_gap_minutes: float = SessionGap,
           personal_data: str = PersonalData, openings: str | None = Openings,
           epochs: int = typer.Option(3, "--epochs"), seed: int = typer.Option(7, "--seed")) -> None:
    """Upload an export to a running gateway, fine-tune on the voice, print the evaluation."""
    api_key = api_key_file.read_text().strip()
    client = OpenAI(base_url=f"{gateway}/v1", api_key=api_key, max_retries=2, timeout=600)
    outcome = run_voice(client, gateway, api_key, _options(
        export, base_model=model, speaker=speaker, source=source, context_turns=context_turns,
        session_gap_minutes=session_gap_minutes, personal_data=personal_data, openings=openings, epochs=epochs,
        seed=seed))
    if outcome["job"].status != "succeeded":
        raise typer.Exit(1)


@app.command()
def local(export: Path = typer.Argument(..., exists=True),
          state_dir: Path = typer.Option(Path("var"), "--state-dir", envvar="EMOTUNE_STATE_DIR"),
          port_offset: int = typer.Option(0, "--port-offset", envvar="EMOTUNE_PORT_OFFSET"),
          base_model: str = typer.Option(DEFAULT_BASE_MODEL, "--base-model", envvar="EMOTUNE_BASE_MODEL"),
          speaker: str = Speaker, source: str = Source, context_turns: int = ContextTurns,
          session_gap_minutes: float = SessionGap, personal_data: str = PersonalData,
          openings: str | None = Openings,
          epochs: int = typer.Option(3, "--epochs"), seed: int = typer.Option(7, "--seed"),
          exit_after: bool = typer.Option(False, "--exit", help="stop the services when the job is done"),
          ui: bool = typer.Option(False, help="also start the Streamlit UI")) -> None:
    """Start every service here and run the voice job end to end (the embedded default)."""
    from emotune.local.supervisor import LocalStack

    started = time.monotonic()
    stack = LocalStack(state_dir, base_model=base_model, port_offset=port_offset, with_ui=ui)
    try:
        stack.start(lambda name, status: console.print(f"  {name:<10} {status}"))
        client = OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=2, timeout=600)
        outcome = run_voice(client, stack.gateway_url, stack.api_key, _options(
            export, base_model=base_model, speaker=speaker, source=source, context_turns=context_turns,
            session_gap_minutes=session_gap_minutes, personal_data=personal_data, openings=openings, epochs=epochs,
            seed=seed))
    except BaseException:
        if exit_after:
            stack.stop()
        raise
    console.print(f"wall time: {time.monotonic() - started:.0f}s")
    if exit_after:
        stack.stop()
    else:
        console.print(f"OpenAI-compatible API: {stack.gateway_url}/v1  (API key in {stack.state_dir / 'api-key'}); "
                      "stop with: emotune local down", markup=False)
    if outcome["job"].status != "succeeded":
        raise typer.Exit(1)
