"""Projects (tenants), through the real stack with the official ``openai`` client: the inference service (SmolLM2),
a pipeline-service replica and a gateway whose keys come from a projects file, all on one local store.

Project ``acme`` and project ``beta`` each have a key; ``ops`` has an admin key; the flat key list is the
``default`` project. Beta must not list, read, delete, cancel or use anything of acme's: every such id answers
404 as OpenAI does (the same body as an id that does not exist); the admin key sees both projects; base models
are everyone's. Datagen is unreachable, so jobs fail at their first remote stage (their ownership is the point).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import httpx
import openai
import pytest
import pytest_asyncio
from pydantic import SecretStr

from emotune.grpc.server import start_server
from emotune.services.inference import published
from emotune.services.pipeline.config import PipelineSettings
from emotune.services.pipeline.server import add_servicers
from emotune.services.pipeline.service import PipelineService
from emotune.services.pipeline.stages import ServiceChannels
from emotune.store.local import LocalStore
from tests.emotune.services.gateway.conftest import start_gateway
from tests.emotune.services.inference.stack import MODEL
from tests.support import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACME, BETA, ADMIN, FLAT = "sk-acme-key-1", "sk-beta-key-1", "sk-ops-admin-1", "sk-flat-default-1"
PROJECTS_TOML = f"""
[projects.acme]
keys = ["{ACME}"]

[projects.beta]
keys = ["{BETA}"]

[projects.ops]
keys = ["{ADMIN}"]
admin = true
"""
STYLES = b"""\
styles:
  - name: cheerful
    system_prompt: You are a cheerful friend.
    reference_texts: [What a wonderful day!, Yay, so happy for you!]
    language: en
"""
JOB = {"model": "smollm2-135m", "extra_body": {"emotune": {"generation": {"questions": {"questions": ["Hi?"]}}}}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(inference, tmp_path_factory):
    """A pipeline replica and a gateway with projects, on the inference service's store; yields the gateway."""
    projects = tmp_path_factory.mktemp("keys") / "projects.toml"
    projects.write_text(PROJECTS_TOML, encoding="utf-8")
    store_path = inference.settings.store_path
    dead = f"127.0.0.1:{free_port()}"
    settings = PipelineSettings(datagen_addr=dead, validator_addr=dead, trainer_addr=dead, inference_addr=dead,
                                job_lease_seconds=2, store_path=store_path)
    async with AsyncExitStack() as stack:
        service = PipelineService(settings, LocalStore(store_path), ServiceChannels.open(settings))
        server = await start_server("pipeline", settings, add_servicers(service), port=0)
        stack.push_async_callback(server.stop)
        stack.push_async_callback(service.shutdown)
        await service.start_runner()
        gateway = await start_gateway(inference.address, pipeline_addr=f"127.0.0.1:{server.port}",
                                      store_path=store_path, gateway_api_keys=SecretStr(FLAT),
                                      gateway_projects_file=projects)
        stack.push_async_callback(gateway.stop)
        yield gateway


@pytest_asyncio.fixture(loop_scope="module")
async def clients(stack):
    async with stack.client(ACME) as acme, stack.client(BETA) as beta, stack.client(ADMIN) as admin:
        yield acme, beta, admin


async def _upload(client: openai.AsyncOpenAI, name: str = "styles.yaml") -> openai.types.FileObject:
    return await client.files.create(file=(name, STYLES), purpose="emotune-styles")


async def _not_found(call, what: str) -> dict:
    """The call fails with OpenAI's 404 error body."""
    with pytest.raises(openai.NotFoundError) as info:
        await call
    body = info.value.body
    assert body["type"] == "invalid_request_error" and what in body["message"], body
    return body


async def test_another_projects_file_answers_404_and_is_not_listed(clients) -> None:
    acme, beta, admin = clients
    mine = await _upload(acme)
    theirs = await _upload(beta)
    assert mine.id in [f.id async for f in acme.files.list()]
    assert mine.id not in [f.id async for f in beta.files.list()]
    assert theirs.id in [f.id async for f in beta.files.list()]
    assert mine.id not in [f.id async for f in beta.files.list(purpose="emotune-styles")]

    absent = await _not_found(beta.files.retrieve("file-000000000000000000000000"), "No such File object")
    retrieved = await _not_found(beta.files.retrieve(mine.id), "No such File object")
    assert retrieved == {**absent, "message": absent["message"].replace("file-000000000000000000000000", mine.id)}
    await _not_found(beta.files.content(mine.id), "No such File object")
    await _not_found(beta.files.delete(mine.id), "No such File object")
    # nor can a job of beta's read acme's file
    await _not_found(beta.fine_tuning.jobs.create(**JOB, training_file=mine.id), "No such File object")

    assert (await acme.files.retrieve(mine.id)).filename == "styles.yaml"  # still there
    everything = [f.id async for f in admin.files.list()]
    assert {mine.id, theirs.id} <= set(everything)
    assert (await admin.files.retrieve(theirs.id)).id == theirs.id


async def test_another_projects_job_answers_404_and_is_not_listed(clients) -> None:
    acme, beta, admin = clients
    styles = await _upload(acme)
    job = await acme.fine_tuning.jobs.create(**JOB, training_file=styles.id)
    beta_job = await beta.fine_tuning.jobs.create(**JOB, training_file=(await _upload(beta)).id)

    assert job.id in [j.id async for j in acme.fine_tuning.jobs.list()]
    assert job.id not in [j.id async for j in beta.fine_tuning.jobs.list()]
    assert [j.id async for j in beta.fine_tuning.jobs.list(limit=1)][:1] == [beta_job.id]
    for call in (beta.fine_tuning.jobs.retrieve(job.id), beta.fine_tuning.jobs.cancel(job.id),
                 beta.fine_tuning.jobs.list_events(job.id), beta.fine_tuning.jobs.checkpoints.list(job.id),
                 beta.get(f"/fine_tuning/jobs/{job.id}/report", cast_to=object)):
        body = await _not_found(call, f"No fine-tuning job found with id {job.id}")
    absent = await _not_found(beta.fine_tuning.jobs.retrieve("ftjob-000000000000000000000000"), "No fine-tuning job")
    assert {**body, "message": ""} == {**absent, "message": ""}

    assert (await acme.fine_tuning.jobs.retrieve(job.id)).id == job.id  # not cancelled by beta's call
    listed = [j.id async for j in admin.fine_tuning.jobs.list()]
    assert {job.id, beta_job.id} <= set(listed)
    assert (await admin.fine_tuning.jobs.retrieve(beta_job.id)).id == beta_job.id


async def test_one_idempotency_key_in_two_projects_makes_two_jobs(clients) -> None:
    acme, beta, _ = clients
    key = {"extra_headers": {"Idempotency-Key": "the-same-key-in-two-projects"}}
    first = await acme.fine_tuning.jobs.create(**JOB, training_file=(await _upload(acme)).id, **key)
    other = await beta.fine_tuning.jobs.create(**JOB, training_file=(await _upload(beta)).id, **key)
    assert other.id != first.id
    again = await acme.fine_tuning.jobs.create(**JOB, training_file=first.training_file, **key)
    assert again.id == first.id  # a retry within the project still finds its job


async def test_another_projects_fine_tuned_model_answers_404(clients, stack, inference) -> None:
    acme, beta, admin = clients
    job = await acme.fine_tuning.jobs.create(**JOB, training_file=(await _upload(acme)).id)
    model = f"ft-smollm2-135m-tenants-{job.id[-8:]}"
    # What the job's serving stage leaves: a published record of the adapter it trained under models/<job id>/.
    record = published.PublishedModel(id=model, base_model=MODEL, adapter_artifact=f"models/{job.id}/adapter",
                                      styles=[("gentle", "Answer gently.")])
    await asyncio.to_thread(published.publish, LocalStore(inference.settings.store_path), record)

    assert {model, f"{model}:gentle"} <= {m.id async for m in acme.models.list()}
    assert {model, f"{model}:gentle"} <= {m.id async for m in admin.models.list()}
    seen_by_beta = {m.id async for m in beta.models.list()}
    assert MODEL in seen_by_beta and model not in seen_by_beta and f"{model}:gentle" not in seen_by_beta
    assert (await acme.models.retrieve(model)).id == model

    for name in (model, f"{model}:gentle"):
        body = await _not_found(beta.models.retrieve(name), name)
        assert body["code"] == "model_not_found"
        body = await _not_found(beta.chat.completions.create(model=name, max_tokens=2,
                                                             messages=[{"role": "user", "content": "Hi"}]), name)
        assert body["code"] == "model_not_found" and body["param"] == "model"
        await _not_found(beta.completions.create(model=name, prompt="Hi", max_tokens=2), name)
    await _not_found(beta.models.delete(model), model)
    async with httpx.AsyncClient(base_url=f"{stack.url}/v1", headers={"Authorization": f"Bearer {BETA}"}) as http:
        download = await http.get(f"/models/{model}/gguf/Modelfile")
    assert download.status_code == 404 and download.json()["error"]["code"] == "model_not_found"

    reply = await beta.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].finish_reason in ("stop", "length")  # base models stay shared
    assert model in {m.id async for m in acme.models.list()}  # beta's delete did nothing
    await asyncio.to_thread(published.forget, LocalStore(inference.settings.store_path), model)


async def test_flat_keys_are_the_default_project_and_unknown_keys_are_refused(stack) -> None:
    async with stack.client(FLAT) as flat, stack.client(ACME) as acme, stack.client("sk-nobody") as nobody:
        mine = await _upload(flat)
        assert mine.id in [f.id async for f in flat.files.list()]
        await _not_found(acme.files.retrieve(mine.id), "No such File object")
        with pytest.raises(openai.AuthenticationError):
            await nobody.files.list()



async def test_unknown_model_names_cost_no_listing_and_name_no_loaded_model(clients, stack, monkeypatch) -> None:
    """A name the gateway has not seen listed is checked by reading its one published record, not by listing every
    model (which reads every published record); inference's 404 names the models loaded on its replica (other
    projects' fine-tunes among them), so a project's key gets the plain 404."""
    _, beta, admin = clients
    directory = stack.server.config.app.state.gateway.models
    listings = 0
    list_models = directory.inference.list_models

    async def counted(*args, **kwargs):
        nonlocal listings
        listings += 1
        return await list_models(*args, **kwargs)

    monkeypatch.setattr(directory.inference, "list_models", counted)
    for n in range(8):
        name = f"ft-no-such-model-{n}"
        body = await _not_found(beta.chat.completions.create(model=name, max_tokens=2,
                                                             messages=[{"role": "user", "content": "Hi"}]), name)
        assert body == {"message": f"The model `{name}` does not exist or is not served.", "type":
                        "invalid_request_error", "param": "model", "code": "model_not_found"}
    await _not_found(beta.completions.create(model="ft-no-such-model-x", prompt="Hi", max_tokens=2), "no-such")
    assert listings == 0
    body = await _not_found(admin.chat.completions.create(model="ft-no-such-model-0", max_tokens=2,
                                                          messages=[{"role": "user", "content": "Hi"}]), "no-such")
    assert MODEL in body["message"]  # an admin still gets inference's details
    # a base model's unknown style keeps inference's hint (the model is the caller's to use)
    await _not_found(beta.chat.completions.create(model=f"{MODEL}:no-such-style", max_tokens=2,
                                                  messages=[{"role": "user", "content": "Hi"}]), "style")
