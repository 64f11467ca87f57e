"""OpenAI's ``method: dpo`` through the gateway and the pipeline service with the official ``openai`` client: a
preference file is uploaded (and a bad one refused naming line and field), a ``dpo`` job is created and echoes its
method, and its validating_files stage imports the file as pair records. The trainer is unreachable here, so the job
stops at its training stage; a whole DPO job to ``succeeded`` runs in tests/emotune/local/test_pipeline_e2e.py."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import openai
import pytest
import pytest_asyncio

from emotune.data.records import parse_records
from emotune.grpc.server import start_server
from emotune.services.pipeline.config import PipelineSettings
from emotune.services.pipeline.server import add_servicers
from emotune.services.pipeline.service import PipelineService
from emotune.services.pipeline.stages import ServiceChannels
from emotune.store.artifacts import read_file
from tests.emotune.services.gateway.conftest import start_gateway
from tests.support import free_port


def preference_line(question: str, chosen: str, rejected: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return json.dumps({"input": {"messages": messages},
                       "preferred_output": [{"role": "assistant", "content": chosen}],
                       "non_preferred_output": [{"role": "assistant", "content": rejected}]}, ensure_ascii=False)


PAIRS = "\n".join(preference_line(q, f"哼，{q}？自己想办法吧。", f"关于“{q}”，这里有三点建议：1. 休息 2. 计划 3. 求助。",
                                  "你是一个毒舌的朋友。")
                  for q in ("今天好累啊", "老板又催方案了", "下雨了没带伞")).encode() + b"\n"


@pytest_asyncio.fixture
async def api(local_store, monkeypatch):
    monkeypatch.setenv("EMOTUNE_STORE_BACKEND", "local")
    monkeypatch.setenv("EMOTUNE_STORE_PATH", str(local_store.root))
    dead = f"127.0.0.1:{free_port()}"  # no stage service listens: a job stops at its first remote stage
    settings = PipelineSettings(datagen_addr=dead, validator_addr=dead, trainer_addr=dead, inference_addr=dead)
    async with AsyncExitStack() as stack:
        service = PipelineService(settings, local_store, ServiceChannels.open(settings))
        server = await start_server("pipeline", settings, add_servicers(service), port=0)
        stack.push_async_callback(server.stop)
        stack.push_async_callback(service.shutdown)
        await service.start_runner()
        gateway = await start_gateway(dead, pipeline_addr=f"127.0.0.1:{server.port}")
        stack.push_async_callback(gateway.stop)
        yield gateway.client(), local_store


async def test_a_preference_file_trains_a_dpo_job_that_echoes_its_method(api) -> None:
    client, store = api
    uploaded = await client.files.create(file=("pairs.jsonl", PAIRS), purpose="fine-tune")
    assert uploaded.status == "processed"
    assert uploaded.model_extra["emotune"] == {"examples": 3, "approx_tokens": pytest.approx(
        uploaded.model_extra["emotune"]["approx_tokens"]), "format": "preference"}

    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 2,
                                                          "learning_rate_multiplier": 2.0}}}
    job = await client.fine_tuning.jobs.create(model="smollm2-135m", training_file=uploaded.id, method=method,
                                               seed=7)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    assert job.method.dpo.hyperparameters.n_epochs == 2 and job.method.dpo.hyperparameters.batch_size == 2
    assert job.method.dpo.hyperparameters.learning_rate_multiplier == 2.0
    for _ in range(150):  # the file is imported, then the (unreachable) trainer stops the job
        job = await client.fine_tuning.jobs.retrieve(job.id)
        if job.status in {"failed", "succeeded", "cancelled"}:
            break
        await asyncio.sleep(0.2)
    assert job.status == "failed" and job.error.code == "training_failed", job.error
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2  # still echoed
    records, _ = parse_records(read_file(store, f"datasets/{uploaded.id}", "records.jsonl").decode())
    assert len(records) == 3 and all(r.is_pair for r in records)
    assert records[0].messages[0].role == "system" and records[0].messages[-1].content.startswith("哼")
    assert records[0].rejected.content.startswith("关于")

    supervised = await client.fine_tuning.jobs.create(model="smollm2-135m", training_file=uploaded.id,
                                                      hyperparameters={"n_epochs": 1})
    assert supervised.method.type == "supervised"  # the older top-level form, echoed as OpenAI does
    assert supervised.method.supervised.hyperparameters.n_epochs == 1


async def test_preference_files_and_dpo_jobs_are_checked_naming_line_and_field(api) -> None:
    client, _ = api
    bad = PAIRS + (preference_line("好累", "哼", "哼") + "\n").encode() + \
        b'{"input": {"messages": [{"role": "user", "content": "hi"}]}, "preferred_output": [{"role": "user", ' \
        b'"content": "x"}], "non_preferred_output": [{"role": "assistant", "content": "y"}]}\n'
    with pytest.raises(openai.BadRequestError) as refused:
        await client.files.create(file=("pairs.jsonl", bad), purpose="fine-tune")
    message = refused.value.message
    assert "pairs.jsonl:4: non_preferred_output" in message and "same text" in message, message
    assert "1 more problem" in message

    chat = await client.files.create(file=("chat.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, '
                                                          b'{"role": "assistant", "content": "yo"}]}\n'),
                                     purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        await client.fine_tuning.jobs.create(model="smollm2-135m", training_file=chat.id, method={"type": "dpo"})
    assert refused.value.body.get("param") == "training_file" and "preference" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        await client.fine_tuning.jobs.create(model="smollm2-135m", training_file=chat.id, method={
            "type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}})
    assert "beta" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        await client.fine_tuning.jobs.create(model="smollm2-135m", training_file=chat.id, method={
            "type": "supervised", "dpo": {"hyperparameters": {"beta": 0.1}}})
    assert "method.dpo" in refused.value.message
