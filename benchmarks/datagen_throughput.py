"""Datagen throughput: the seeds' sequential loop vs a datagen job at concurrency 32, side by side.

Both talk to the same OpenAI-compatible test teacher (a separate process on loopback) that answers every request
after a fixed 200 ms, like a fast hosted model. The baseline is what seeds 000/002/003 do: one synchronous
``client.chat.completions.create`` after the other. The candidate is a whole datagen job (planning, retries
policy, shards, dataset publishing included) with 32 requests in flight.

    python -m benchmarks.datagen_throughput [--latency 0.2] [--baseline 20] [--samples 1600] [--concurrency 32]

Targets (issue 3): >= 100 samples/s and >= 20x the sequential loop.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import httpx
import openai
import typer

from emotune.jobs.store import JobState
from emotune.models.server_process import free_port
from emotune.services.datagen.config import DatagenSettings
from emotune.services.datagen.service import DatagenService
from emotune.store.local import LocalStore

ROOT = Path(__file__).resolve().parents[1]
STYLES = """\
styles:
  - name: 温柔
    system_prompt: 你是一个温柔体贴的聊天助手
    few_shot:
      - {user: 今天好累啊, assistant: 辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸}
  - name: 毒舌
    system_prompt: 你是一个喜欢用犀利吐槽表达关心的朋友
"""


def start_teacher(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.teacher_server", "--port", str(port),
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("test teacher did not start") from None
            time.sleep(0.1)


def sequential_loop(base_url: str, questions: list[str]) -> float:
    """The seeds' loop: one request at a time, each answer appended as it comes. Returns samples/s."""
    client = openai.OpenAI(api_key="EMPTY", base_url=base_url)
    started = time.perf_counter()
    answers = []
    for question in questions:
        response = client.chat.completions.create(model="teacher-test", messages=[
            {"role": "system", "content": "你是一个温柔体贴的聊天助手"}, {"role": "user", "content": question}])
        answers.append(response.choices[0].message.content)
    return len(answers) / (time.perf_counter() - started)


async def datagen_job(base_url: str, questions: list[str], concurrency: int) -> tuple[float, int]:
    """A full datagen job; returns (samples/s over the job's wall time, records published)."""
    with tempfile.TemporaryDirectory(prefix="emotune-bench-") as tmp:
        # The test teacher is the operator's default teacher, as a deployment configures it: a job names a
        # teacher, never its endpoint.
        settings = DatagenSettings(store_path=Path(tmp), datagen_openai_max_concurrency=concurrency,
                                   datagen_teacher_base_url=base_url, log_level="WARNING")
        service = DatagenService(settings, LocalStore(tmp))
        started = time.perf_counter()
        record = await service.start({"styles_yaml": STYLES, "questions": {"questions": questions},
                                      "teacher": {"name": "default", "model": "teacher-test",
                                                  "max_concurrency": concurrency}})
        await service.runner.wait(record.job_id)
        elapsed = time.perf_counter() - started
        job = service.jobs.get(record.job_id)
        if job.state != JobState.SUCCEEDED:
            raise RuntimeError(f"benchmark job {job.state.value}: {job.error}")
        return job.result["records"] / elapsed, int(job.result["records"])


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.split("\n\n")[0])
def main(latency: Annotated[float, typer.Option(help="teacher latency per request (s)")] = 0.2,
         baseline: Annotated[int, typer.Option(help="requests in the sequential loop")] = 20,
         samples: Annotated[int, typer.Option(help="samples in the datagen job (2 styles)")] = 1600,
         concurrency: int = 32) -> None:
    proc, base_url = start_teacher(latency)
    try:
        openai.OpenAI(api_key="EMPTY", base_url=base_url).models.list()  # warm-up: imports, connection
        sequential = sequential_loop(base_url, [f"第{i}个问题：今天怎么样" for i in range(baseline)])
        rate, records = asyncio.run(datagen_job(base_url, [f"问题{i}：最近好吗" for i in range(samples // 2)],
                                                concurrency))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"teacher latency             {latency * 1000:.0f} ms per request")
    print(f"sequential loop (seeds)     {sequential:8.1f} samples/s   ({baseline} requests)")
    print(f"datagen, concurrency {concurrency:<3d}   {rate:8.1f} samples/s   ({records} samples, whole job)")
    print(f"speed-up                    {rate / sequential:8.1f}x")


if __name__ == "__main__":
    app()
