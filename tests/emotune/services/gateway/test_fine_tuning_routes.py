"""``/v1/files`` and ``/v1/fine_tuning/jobs`` through two stateless gateways in front of two pipeline-service
replicas, all on one artifact store (local directory and the real S3 server), called with the official ``openai``
client. Datagen is unreachable here, so a job fails at its first remote stage within a second: the tests look at
what every replica and gateway shows of it (the whole chain runs in tests/emotune/local/test_pipeline_e2e.py)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import openai
import pytest
import pytest_asyncio

from emotune.grpc.server import start_server
from emotune.services.pipeline.config import PipelineSettings
from emotune.services.pipeline.server import add_servicers
from emotune.services.pipeline.service import PipelineService
from emotune.services.pipeline.stages import ServiceChannels
from tests.emotune.services.gateway.conftest import start_gateway
from tests.support import free_port

STYLES = """\
styles:
  - name: cheerful
    system_prompt: You are a cheerful friend.
    reference_texts: [What a wonderful day!, Yay, so happy for you!]
    language: en
"""
BAD_CHAT_JSONL = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                  b'{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}\n')


@pytest_asyncio.fixture
async def replicas(any_store, store_env, monkeypatch):
    """Two pipeline replicas and two gateways (gateway i talks to replica i) on one store."""
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: every stage service is unreachable
    settings = PipelineSettings(datagen_addr=dead, validator_addr=dead, trainer_addr=dead, inference_addr=dead,
                                job_lease_seconds=2)
    async with AsyncExitStack() as stack:
        gateways = []
        for _ in range(2):
            service = PipelineService(settings, any_store, ServiceChannels.open(settings))
            server = await start_server("pipeline", settings, add_servicers(service), port=0)
            stack.push_async_callback(server.stop)
            stack.push_async_callback(service.shutdown)
            await service.start_runner()
            gateway = await start_gateway(dead, pipeline_addr=f"127.0.0.1:{server.port}")
            stack.push_async_callback(gateway.stop)
            gateways.append(gateway.client())
        yield gateways


async def _settled(client: openai.AsyncOpenAI, job_id: str, timeout: float = 30) -> openai.types.fine_tuning.FineTuningJob:
    for _ in range(int(timeout / 0.2)):
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in {"succeeded", "failed", "cancelled"}:
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"{job_id} still {job.status} after {timeout}s")


async def test_files_are_shared_by_every_gateway_and_bad_uploads_name_the_line(replicas) -> None:
    one, two = replicas
    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    assert styles.purpose == "emotune-styles" and styles.bytes == len(STYLES.encode())
    assert (await two.files.retrieve(styles.id)).filename == "styles.yaml"
    assert styles.id in {f.id for f in (await two.files.list()).data}
    assert (await (await two.files.content(styles.id)).aread()) == STYLES.encode()

    with pytest.raises(openai.BadRequestError) as bad:
        await two.files.create(file=("chat.jsonl", BAD_CHAT_JSONL), purpose="fine-tune")
    assert "chat.jsonl:2: messages[1].role" in bad.value.message and "robot" in bad.value.message, bad.value.message

    await one.files.delete(styles.id)
    with pytest.raises(openai.NotFoundError):
        await two.files.retrieve(styles.id)


async def test_files_jobs_and_events_are_listed_in_pages_the_openai_client_follows(replicas) -> None:
    """``after`` + ``limit`` with ``has_more`` (OpenAI's shape), newest first; the client's auto-pagination walks
    them (each page one listing of the store: tests/emotune/store/test_listing_pages.py)."""
    one, two = replicas
    uploaded = []
    for i in range(3):
        uploaded.append((await one.files.create(file=(f"s{i}.yaml", STYLES.encode()), purpose="emotune-styles")).id)
        await asyncio.sleep(1.01)  # created_at is in seconds
    first = await two.files.list(limit=2)
    assert [f.id for f in first.data] == uploaded[:0:-1] and first.has_more
    assert [f.id async for f in two.files.list(limit=2)] == uploaded[::-1]
    assert [f.id async for f in two.files.list(purpose="fine-tune")] == []

    jobs = []
    for _ in range(3):
        jobs.append((await one.fine_tuning.jobs.create(
            model="smollm2-135m", training_file=uploaded[0],
            extra_body={"emotune": {"generation": {"questions": {"questions": ["How are you?"]}}}})).id)
    page = await two.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == jobs[:0:-1] and page.has_more
    assert [j.id async for j in two.fine_tuning.jobs.list(limit=2)] == jobs[::-1]

    await _settled(two, jobs[0])
    events = [e.id async for e in two.fine_tuning.jobs.list_events(jobs[0], limit=2)]
    everything = [e.id for e in (await one.fine_tuning.jobs.list_events(jobs[0], limit=100)).data]
    assert events == everything and len(events) > 2
    newest = await one.fine_tuning.jobs.list_events(jobs[0], limit=2)
    assert [e.id for e in newest.data] == everything[:2] and newest.has_more


async def test_a_job_is_one_job_through_either_gateway(replicas) -> None:
    one, two = replicas
    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    created = await one.fine_tuning.jobs.create(
        model="smollm2-135m", training_file=styles.id, suffix="routes", seed=7,
        extra_body={"emotune": {"generation": {"questions": {"questions": ["How are you?", "Any plans?"]}}}})
    assert created.id.startswith("ftjob-") and created.status in {"queued", "validating_files", "running"}
    assert created.seed == 7 and created.training_file == styles.id

    failed = await _settled(two, created.id)
    assert failed.status == "failed"
    assert failed.error.code == "datagen_failed" and "datagen" in failed.error.message, failed.error
    assert (await one.fine_tuning.jobs.retrieve(created.id)).model_dump() == failed.model_dump()

    events_one = [e.model_dump() for e in (await one.fine_tuning.jobs.list_events(created.id, limit=100)).data]
    events_two = [e.model_dump() for e in (await two.fine_tuning.jobs.list_events(created.id, limit=100)).data]
    assert events_one == events_two
    messages = [e["message"] for e in events_one]
    assert "validating_files succeeded" in messages and "datagen started" in messages
    assert messages.count("datagen started") == 1  # one replica ran it, once
    seqs = [e["data"]["seq"] for e in events_one]
    assert seqs == list(range(len(seqs), 0, -1))  # newest first, one writer: no gap, no duplicate

    page = await two.fine_tuning.jobs.list(limit=5)
    assert created.id in [j.id for j in page.data]
    assert (await two.fine_tuning.jobs.checkpoints.list(created.id)).data == []
    report = await two.get(f"/fine_tuning/jobs/{created.id}/report", cast_to=object)
    assert report["status"] == "failed" and report["evaluation"] == {}
    with pytest.raises(openai.NotFoundError):
        await one.get(f"/fine_tuning/jobs/{created.id}/plots/evaluation.png", cast_to=object)

    with pytest.raises(openai.BadRequestError, match="already failed"):
        await two.fine_tuning.jobs.cancel(created.id)


async def test_a_retry_with_the_same_idempotency_key_gets_the_same_job_from_any_replica(replicas) -> None:
    one, two = replicas
    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    body = {"model": "smollm2-135m", "training_file": styles.id, "suffix": "retry",
            "extra_body": {"emotune": {"generation": {"questions": {"questions": ["How are you?"]}}}}}

    def key(value: str) -> dict:
        return {"extra_headers": {"Idempotency-Key": value}}

    first = await one.fine_tuning.jobs.create(**body, **key("client-retry-1"))
    retried = await two.fine_tuning.jobs.create(**body, **key("client-retry-1"))  # e.g. after a timeout
    assert retried.id == first.id and retried.seed == first.seed  # the seed was drawn once
    assert [j.id for j in (await two.fine_tuning.jobs.list(limit=100)).data].count(first.id) == 1
    assert (await _settled(one, first.id)).status == "failed"  # run once, replayed after it ended too
    assert (await two.fine_tuning.jobs.create(**body, **key("client-retry-1"))).status == "failed"
    started = [e.message for e in (await one.fine_tuning.jobs.list_events(first.id, limit=100)).data]
    assert started.count("datagen started") == 1

    with pytest.raises(openai.ConflictError) as reused:
        await one.fine_tuning.jobs.create(**{**body, "suffix": "other"}, **key("client-retry-1"))
    assert first.id in reused.value.message and "different request" in reused.value.message
    others = {(await one.fine_tuning.jobs.create(**body, **key("client-retry-2"))).id,
              (await one.fine_tuning.jobs.create(**body)).id, (await two.fine_tuning.jobs.create(**body)).id}
    assert len(others) == 3 and first.id not in others  # a new key, or none: a new job
    with pytest.raises(openai.BadRequestError) as bad_key:
        await two.fine_tuning.jobs.create(**body, **key("x" * 256))
    assert bad_key.value.body["param"] == "Idempotency-Key", bad_key.value.body


async def test_bad_requests_are_refused_with_the_field_at_fault(replicas) -> None:
    one, two = replicas
    with pytest.raises(openai.NotFoundError) as missing:
        await one.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert "ftjob-doesnotexist" in missing.value.message
    with pytest.raises(openai.NotFoundError, match="file-nope"):
        await two.fine_tuning.jobs.create(model="smollm2-135m", training_file="file-nope")

    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    with pytest.raises(openai.BadRequestError) as no_questions:
        await two.fine_tuning.jobs.create(model="smollm2-135m", training_file=styles.id)
    assert no_questions.value.body["param"] == "emotune.generation", no_questions.value.body
    with pytest.raises(openai.BadRequestError) as bad_suffix:
        await one.fine_tuning.jobs.create(model="smollm2-135m", training_file=styles.id, suffix="no spaces!")
    assert bad_suffix.value.body["param"] == "suffix", bad_suffix.value.body


async def test_a_job_cannot_name_a_server_secret_for_its_teacher(replicas) -> None:
    """Issue 29: the teacher's key variable was the request's to name; it is refused before any job exists."""
    one, _two = replicas
    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    teacher = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x", "api_key_env": "HOME"}
    with pytest.raises(openai.BadRequestError) as refused:
        await one.fine_tuning.jobs.create(
            model="smollm2-135m", training_file=styles.id,
            extra_body={"emotune": {"generation": {"questions": {"questions": ["hi"]}, "teacher": teacher}}})
    assert refused.value.body["param"] == "emotune.generation.teacher.api_key_env", refused.value.body
    assert "named teachers" in refused.value.message
    assert (await one.fine_tuning.jobs.list()).data == []
