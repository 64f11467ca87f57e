"""Two creates with one Idempotency-Key, sent at once to two gateway processes, each forwarding to its own pipeline
process, all four on one real S3 server with conditional writes (moto's, a separate process): exactly one job is
made, and it runs once (issue 29, item 5).

Every process is what the containers run (``python -m emotune.services.gateway`` / ``emotune.services.pipeline``); the calls are
the official ``openai`` client's. Datagen is unreachable, so the job fails at its first remote stage: that it ran,
and how many times, is the point. On the code before job creation used the store's compare-and-swap (f7de692:
exists-then-write) it failed in 4 of 9 runs (a job's datagen stage started twice, or its events of two runs
overwrote each other: both processes created the job and ran it); the race needs two creates to meet inside a few
store requests, so it is probabilistic there. On the current code it has not failed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emotune.jobs.store import JobStore
from emotune.store.s3 import S3Store
from tests.emotune.jobs.test_job_cas import moto_endpoint, moto_settings  # noqa: F401 (the fixture)
from tests.support import free_port
from tests.support.service_process import ROOT, ServiceProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(600)]

API_KEY = "sk-emotune-two-gateways"
STYLES = b"""\
styles:
  - name: cheerful
    system_prompt: You are a cheerful friend.
    reference_texts: [What a wonderful day!, Yay, so happy for you!]
    language: en
"""
KEYS = 16
FINAL = ("failed", "succeeded", "cancelled")
JOB = {"model": "smollm2-135m", "extra_body": {"emotune": {"generation": {"questions": {"questions": ["Hi?"]}}}}}


def store_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {"EMOTUNE_STORE_BACKEND": "s3", "EMOTUNE_S3_ENDPOINT": endpoint, "EMOTUNE_S3_ACCESS_KEY": "test",
            "EMOTUNE_S3_SECRET_KEY": "test", "EMOTUNE_S3_BUCKET": bucket, "EMOTUNE_S3_SECURE": "false"}


def finished_here(metrics: str) -> int:
    """Final states a pipeline process recorded (its ``emotune_jobs_finished_total``): 1 for each run it ended."""
    return sum(int(sample.value) for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "emotune_jobs_finished_total")


class GatewayProcess:
    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log, self.port = log, free_port()
        self.env = {**os.environ, "EMOTUNE_GATEWAY_PORT": str(self.port), "EMOTUNE_METRICS_PORT": str(free_port()),
                    "EMOTUNE_GATEWAY_API_KEYS": API_KEY, **env}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "emotune.services.gateway"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=self.url) as http:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the gateway did not start"
                try:
                    if http.get("/healthz", timeout=1).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


async def test_one_idempotency_key_sent_to_two_gateways_at_once_makes_one_job_that_runs_once(moto_endpoint,  # noqa: F811
                                                                                             tmp_path):
    """KEYS keys, each sent at once to both gateways (all 2 x KEYS creates in flight together, so that some pair
    meets inside the few store requests of a create)."""
    bucket = f"emotune-two-gateways-{uuid.uuid4().hex[:8]}"
    store = S3Store.from_settings(moto_settings(moto_endpoint, bucket))  # makes the bucket before the processes
    assert store.conditional_writes
    env = store_env(moto_endpoint, bucket)
    dead = f"127.0.0.1:{free_port()}"
    env |= {"EMOTUNE_DATAGEN_ADDR": dead, "EMOTUNE_VALIDATOR_ADDR": dead, "EMOTUNE_TRAINER_ADDR": dead,
            "EMOTUNE_INFERENCE_ADDR": dead}  # the default 15 s lease: a starved CI machine must not lose one
    pipelines = [ServiceProcess("pipeline", tmp_path / f"pipeline-{n}.log", env) for n in "ab"]
    gateways: list[GatewayProcess] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in pipelines))
        gateways = [GatewayProcess(tmp_path / f"gateway-{n}.log", {**env, "EMOTUNE_PIPELINE_ADDR": p.address})
                    for n, p in zip("ab", pipelines, strict=True)]
        await asyncio.gather(*(asyncio.to_thread(g.start) for g in gateways))
        first, second = (g.client() for g in gateways)
        async with first, second:
            styles = await first.files.create(file=("styles.yaml", STYLES), purpose="emotune-styles")
            keys = [{"extra_headers": {"Idempotency-Key": f"one-key-{uuid.uuid4().hex}"}} for _ in range(KEYS)]
            jobs = await asyncio.gather(*(c.fine_tuning.jobs.create(**JOB, training_file=styles.id, **key)
                                          for key in keys for c in (first, second)))
            pairs = [(jobs[2 * n].id, jobs[2 * n + 1].id) for n in range(KEYS)]
            assert all(a == b for a, b in pairs), pairs  # each key: one job id from both gateways
            job_ids = [a for a, _ in pairs]
            deadline = time.monotonic() + 240
            for job_id in job_ids:
                while (await second.fine_tuning.jobs.retrieve(job_id)).status not in FINAL:
                    assert time.monotonic() < deadline, f"job {job_id} did not finish"
                    await asyncio.sleep(0.5)
            listed = [j.id async for j in first.fine_tuning.jobs.list(limit=100)]
            await asyncio.sleep(3)  # a second run of a job, had one started, ends by now (it fails at once)
            events = {job_id: await asyncio.to_thread(JobStore(store).events, job_id) for job_id in job_ids}
        async with httpx.AsyncClient() as http:  # each process counts the runs it ended (events of two runs
            # of one job on a store without compare-and-swap overwrite each other: they cannot show it)
            finished = [finished_here((await http.get(f"http://127.0.0.1:{p.metrics_port}/metrics")).text)
                        for p in pipelines]
    finally:
        for gateway in gateways:
            gateway.stop()
        for pipeline in pipelines:
            pipeline.stop()
    assert sorted(listed) == sorted(job_ids)  # one job per key in the store's index
    assert sum(finished) == KEYS, finished  # each ran to its end once, in one process
    for job_id, log in events.items():
        states = [e.data.get("state") for e in log if e.type == "state"]
        assert states[:2] == ["queued", "running"] and len(states) == 3 and states[2] in FINAL, (job_id, states)
        assert [e.message for e in log if e.type == "stage"].count("datagen started") == 1, job_id
