"""emotune/services/gateway/owners.py: which project may use a model name, on a real local store."""

from __future__ import annotations

import pytest

from emotune.jobs.store import JobStore
from emotune.services.gateway.auth import Caller
from emotune.services.gateway.config import GatewaySettings
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.owners import ModelDirectory
from emotune.services.inference import published
from emotune.store.local import LocalStore
from emotune.v1 import inference_pb2

pytestmark = pytest.mark.asyncio


class Inference:
    """ListModels as inference answers it: the published records of the store (plus nothing loaded)."""

    def __init__(self, store: LocalStore) -> None:
        self.store, self.listings = store, 0

    async def list_models(self, timeout: float | None = None) -> inference_pb2.ListModelsResponse:
        self.listings += 1
        return inference_pb2.ListModelsResponse(models=[
            inference_pb2.ModelInfo(id=r.id, published=True, adapter_artifact=r.adapter_artifact)
            for r in published.list_published(self.store)])


async def test_a_name_published_after_it_was_asked_for_is_checked_again(tmp_path) -> None:
    """No absence is cached: beta asks for a name nobody serves, acme's job then publishes it; beta's next request
    for it is refused at once (a cached "unknown" would pass it on to inference, which would serve it)."""
    store = LocalStore(tmp_path / "store")
    inference = Inference(store)
    directory = ModelDirectory(inference, GatewaySettings(store_path=tmp_path / "store"))
    acme, beta = Caller("acme"), Caller("beta")
    job = JobStore(store).create("fine_tuning", {"request": {"project": "acme"}})
    model = f"ft-base-x-{job.job_id[-8:]}"

    assert await directory.check(beta, model) is False  # unknown: left to inference's 404
    await directory.listing()  # a listing without it is fresh now
    published.publish(store, published.PublishedModel(id=model, base_model="base",
                                                       adapter_artifact=f"models/{job.job_id}/adapter"))
    with pytest.raises(OpenAIError) as refused:
        await directory.check(beta, f"{model}:gentle")
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
    assert await directory.check(acme, model) is True
    assert await directory.check(Caller("ops", admin=True), model) is True
    assert inference.listings == 1  # only the explicit one


async def test_a_model_trained_under_its_owners_generation_belongs_to_its_jobs_project(tmp_path) -> None:
    """The pipeline's layout since item 5 of issue 29: each owner of a job writes under
    ``models/<job id>/<job id>-g<N>/``; the model is still its job's project's, and its GGUF export is found beside
    its adapter. The layout before it (``models/<job id>/adapter``) reads as before."""
    from emotune.jobs.runner import owner_outputs
    from emotune.services.gateway.models.protocol import ModelDetails
    from emotune.services.gateway.models.serving import gguf_artifact
    from emotune.services.gateway.owners import training_job

    store = LocalStore(tmp_path / "store")
    directory = ModelDirectory(Inference(store), GatewaySettings(store_path=tmp_path / "store"))
    job = JobStore(store).create("fine_tuning", {"request": {"project": "acme"}})
    for adapter in (f"{owner_outputs('models', job.job_id, 2)}/adapter", f"models/{job.job_id}/adapter"):
        model = inference_pb2.ModelInfo(id="ft-x", published=True, adapter_artifact=adapter)
        assert training_job(model) == job.job_id
        assert await directory.owner(model) == "acme"
        details = ModelDetails(engine="llamacpp", base_model="base", artifact="", adapter_artifact=adapter, styles=[])
        assert gguf_artifact(details) == adapter.removesuffix("/adapter") + "/gguf"
