"""Progress a user sees when the output goes to a file or a pipe (nohup, systemd, CI, ``docker logs``): plain lines
with done/total, rate and ETA for every stage, at a steady pace; the rich bar stays for terminals.

The main job's follower (``emotune local demo``) is driven against the real gateway (HTTP, the official
``openai`` client, the fine-tuning jobs API) whose pipeline relays real sub-jobs over gRPC (datagen, validation,
training) and reports its own evaluation, as the real pipeline does; only the stages' work is replaced by
counting. ``emotune datagen/train run``'s follower is driven by a real job over the Jobs gRPC service.
"""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from openai import OpenAI
from rich.console import Console

from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.jobs.follow import ProgressLines, follow_on_service, format_duration, progress_line
from emotune.jobs.runner import JobRunner
from emotune.jobs.servicer import JobsServicer
from emotune.jobs.store import JobStore
from emotune.local.demo import DemoOptions, follow, submit_job
from emotune.settings import Settings
from emotune.store.local import LocalStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc

LINE = re.compile(r"^\[(?P<stage>[\w-]+)\] (?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\) "
                  r"(?P<rate>[\d.]+|\?)/s ETA (?P<eta>\d+s|\d+m\d\ds|\d+h\d\dm|\?)(?:  .*)?$")
STAGES = {"datagen": 40, "validation": 12, "training": 9}  # sub-jobs relayed over gRPC: how much each counts
EVALUATION = 6


@pytest.fixture(autouse=True)
def _no_forced_terminal(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)


def _lines(out: str, stage: str) -> list[re.Match]:
    return [m for m in map(LINE.match, out.splitlines()) if m and m["stage"] == stage]


def assert_progress_lines(out: str, stage: str, total: int) -> list[re.Match]:
    lines = _lines(out, stage)
    assert lines, f"no progress line for {stage}:\n{out}"
    assert all(int(m["total"]) == total for m in lines)
    assert lines[-1]["done"] == str(total) and lines[-1]["pct"] == "100" and lines[-1]["eta"] == "0s"
    assert any(m["rate"] != "?" and float(m["rate"]) > 0 and m["eta"] != "?" for m in lines), out
    assert len(lines) <= 100 / 5 + 2, "at most one line per 5 % step (plus first and last)"
    return lines


def test_a_line_names_stage_done_total_rate_and_eta():
    assert progress_line("datagen", 12, 60, 0.8, 60) == "[datagen] 12/60 (20%) 0.80/s ETA 1m00s"
    assert progress_line("training", 3, 9, None, None, "loss 1.234") == "[training] 3/9 (33%) ?/s ETA ?  loss 1.234"
    assert [format_duration(s) for s in (0, 45.4, 65, 3725, None)] == ["0s", "45s", "1m05s", "1h02m", "?"]


def test_lines_come_every_5_percent_or_every_10_seconds_and_at_the_end():
    now = [0.0]
    printed: list[str] = []
    lines = ProgressLines(printed.append, clock=lambda: now[0])
    for done in range(201):  # 200 items at 1 item/s
        now[0] = float(done)
        lines.update("datagen", done, 200, rate=1.0 if done else 0.0)
    assert len(printed) == 21  # the first report, then every 5 % (10 items = 10 s)
    assert printed[0] == "[datagen] 0/200 (0%) ?/s ETA ?" and printed[-1] == "[datagen] 200/200 (100%) 1.0/s ETA 0s"
    printed.clear()
    for second in range(1, 61):  # a slow stage: a line every 10 s even though no 5 % step is crossed
        now[0] = 1000.0 + second
        lines.update("training", second // 30, 100, eta_s=3000.0)
    assert len(printed) == 6 and all(p.endswith("ETA 50m00s") for p in printed)
    assert "0.03/s" in printed[0]  # a rate from the ETA when the event gives only that


async def test_a_piped_cli_follower_prints_progress_lines_of_a_real_job_over_grpc(tmp_path, capsys):
    settings = Settings(store_path=tmp_path)
    jobs = JobStore(LocalStore(tmp_path))

    async def handler(ctx):
        for phase, total in (("embedding", 10), ("scoring", 4)):
            for done in range(1, total + 1):
                await asyncio.sleep(0.02)
                ctx.progress(done, total, stage=phase, ok=done, failed=0)
        return {"answer": 42}

    runner = JobRunner(jobs, "demo", handler)

    def add(server):
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs, runner), server)
        return ["emotune.v1.Jobs"]

    async def start(channel) -> str:
        return (await runner.submit({})).job_id

    server = await start_server("datagen", settings, add, port=0)
    try:
        state, result = await follow_on_service(settings, f"127.0.0.1:{server.port}", start, Console(),
                                                lambda d: f"ok {d.get('ok', 0)}")
    finally:
        await server.stop()
    out = capsys.readouterr().out
    assert state == "succeeded" and result["answer"] == 42
    assert_progress_lines(out, "embedding", 10)
    assert_progress_lines(out, "scoring", 4)
    assert "job succeeded" in out and "━" not in out  # no bar drawn into the pipe


def test_on_a_terminal_the_bar_stays():
    from emotune.jobs.follow import follow as follow_events

    async def events():
        for done in range(1, 4):
            yield "progress", f"{done}/3", {"done": done, "total": 3, "rate_per_s": 1.0, "eta_s": 3 - done}
        yield "state", "succeeded", {"state": "succeeded"}

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    assert asyncio.run(follow_events(events(), console, lambda d: "working")) == "succeeded"
    assert "━" in buffer.getvalue() and not any(map(LINE.match, buffer.getvalue().splitlines()))


# ----------------------------------------------------------------- the main job, piped


async def _count(ctx) -> dict:
    """A sub-job reporting as the real services do."""
    stage, total = ctx.spec["stage"], ctx.spec["total"]
    for done in range(1, total + 1):
        await asyncio.sleep(0.02)
        if stage == "training":  # the trainer: steps, loss and an ETA, no rate
            ctx.emit("progress", f"step {done}/{total} loss {2.0 / done:.4f}", done=done, total=total, step=done,
                     loss=round(2.0 / done, 5), eta_s=round(0.02 * (total - done), 3))
        elif stage == "validation":  # the validator: its own phase, relayed as ``phase``
            ctx.progress(done, total, f"embedded {done}/{total}", stage="embedding")
        else:
            ctx.progress(done, total, ok=done, failed=0)
    return {"dataset_artifact": f"{stage}/out", "kept_artifact": f"{stage}/kept"}


async def test_the_main_job_piped_prints_progress_lines_for_every_stage(tmp_path, monkeypatch, capsys):
    from emotune.services.pipeline.config import PipelineSettings
    from emotune.services.pipeline.server import add_servicers as add_pipeline_servicers
    from emotune.services.pipeline.service import PipelineService
    from emotune.services.pipeline.stages import Pipeline, ServiceChannels, _Run
    from tests.emotune.services.gateway.conftest import API_KEYS, start_gateway

    settings = Settings(store_path=tmp_path / "services")
    sub_jobs = JobStore(LocalStore(tmp_path / "services"))
    sub_runner = JobRunner(sub_jobs, "stage", _count)

    def add(server):
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(sub_jobs, sub_runner), server)
        return ["emotune.v1.Jobs"]

    server = await start_server("datagen", settings, add, port=0)

    async def run(self, ctx) -> dict:
        """The pipeline's own stage runner and relay, over real gRPC; each stage's work is counting."""
        stages = _Run(ctx, dict(ctx.checkpoint))
        async with open_channel(f"127.0.0.1:{server.port}", settings) as channel:
            stub = jobs_pb2_grpc.JobsStub(channel)
            for stage, total in STAGES.items():
                async def start(prefix: str, stage=stage, total=total) -> jobs_pb2.JobRef:
                    return jobs_pb2.JobRef(job_id=(await sub_runner.submit({"stage": stage, "total": total,
                                                                            "output_prefix": prefix})).job_id)
                await stages.remote(stage, stub, f"{stage}/{ctx.job_id}", start)

        async def evaluate() -> dict:
            for done in range(1, EVALUATION + 1):
                await asyncio.sleep(0.02)
                ctx.progress(done, EVALUATION, "evaluating", stage="evaluation")
            return {"table": []}

        await stages.once("evaluation", evaluate)
        return {"fine_tuned_model": "ft-gemma3-270m-demo-test", "evaluation": {}}

    monkeypatch.setattr(Pipeline, "run", run)
    pipeline_settings = PipelineSettings(store_path=tmp_path / "gateway")
    pipeline = PipelineService(pipeline_settings, LocalStore(tmp_path / "gateway"),
                               ServiceChannels.open(pipeline_settings))
    pipeline_server = await start_server("pipeline", pipeline_settings, add_pipeline_servicers(pipeline), port=0)
    await pipeline.start_runner()
    gateway = await start_gateway("127.0.0.1:9", store_path=tmp_path / "gateway",
                                  pipeline_addr=f"127.0.0.1:{pipeline_server.port}")
    try:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEYS[0], max_retries=0, timeout=30)
        job = await asyncio.to_thread(submit_job, client, DemoOptions(questions_per_style=4, eval_questions=2))
        console = Console()  # sys.stdout as a pipe (captured), as under nohup / CI / docker logs
        assert not console.is_terminal
        finished = await asyncio.to_thread(follow, client, job.id, console, 120)
    finally:
        await gateway.stop()
        await pipeline.shutdown()
        await pipeline_server.stop()
        await server.stop()
    out = capsys.readouterr().out
    assert finished.status == "succeeded", out
    for stage, total in {**STAGES, "evaluation": EVALUATION}.items():
        assert f"{stage} started" in out and f"{stage} succeeded" in out
        assert_progress_lines(out, stage, total)
    assert any(m.group(0).endswith("loss 0.222") for m in _lines(out, "training")), out
    assert "━" not in out
