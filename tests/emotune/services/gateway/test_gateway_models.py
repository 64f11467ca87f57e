"""``/v1/models`` for published fine-tunes with the official ``openai`` client: listed whether or not the answering
replica has loaded them, deleted with OpenAI's ``models.delete`` (base models and style ids refused), and a style
id's GGUF export has its own Ollama Modelfile with the style's trigger as SYSTEM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from emotune.errors import NotFound
from emotune.models.basemodels import resolve_base_model
from emotune.services.inference import published
from emotune.services.inference.registry import LoadSpec
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact, read_manifest
from tests.emotune.services.gateway.conftest import API_KEYS, start_gateway
from tests.emotune.services.inference.stack import MODEL

pytestmark = pytest.mark.asyncio(loop_scope="module")
FINE_TUNE = "ft-smollm2-135m-models-1a2b3c4d"
ADAPTER = "models/ftjob-models/adapter"
ADAPTER_TO_DELETE = "models/ftjob-deleted/adapter"
MODELFILE = 'FROM ./model.gguf\nTEMPLATE """{{ .Prompt }}"""\nPARAMETER stop "<|im_end|>"\n'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(inference):
    """A gateway on the inference service's store (GGUF exports are read from it)."""
    running = await start_gateway(inference.address, store_path=inference.settings.store_path)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
def smollm_dir() -> Path:
    return resolve_base_model(MODEL, Settings().cache_dir)


def publish_fine_tune(store, smollm_dir: Path, work: Path, adapter: str = ADAPTER) -> None:
    """What a finished job leaves: an adapter, its GGUF export, and the record that publishes it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm_dir)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])).save_pretrained(work)
    publish_artifact(store, adapter, {p.name: p for p in work.iterdir()}, {"kind": "adapter"})
    publish_artifact(store, adapter.replace("/adapter", "/gguf"),
                     {"Modelfile": MODELFILE.encode(), "model.gguf": b"GGUF-not-really"}, {"kind": "gguf"})
    spec = LoadSpec(FINE_TUNE, adapter_artifact=adapter, base_model=MODEL,
                    styles=(("毒舌", 'Answer with a sharp tongue; never say """.'), ("gentle", "Answer gently.")))
    published.publish(store, spec.record(published.artifact_digests(store, [adapter])))


async def test_published_fine_tunes_are_listed_downloaded_per_style_and_deleted(inference, gateway, client,
                                                                               smollm_dir, tmp_path):
    store = inference.service.registry.store
    await asyncio.to_thread(publish_fine_tune, store, smollm_dir, tmp_path / "adapter")

    listed = {m.id: m for m in (await client.models.list()).data}
    assert {FINE_TUNE, f"{FINE_TUNE}:毒舌", f"{FINE_TUNE}:gentle"} <= set(listed)
    details = listed[FINE_TUNE].model_extra["emotune"]
    assert details["published"] and not details["loaded"]  # not loaded by this replica yet
    assert listed[f"{FINE_TUNE}:gentle"].model_extra["parent"] == FINE_TUNE

    reply = await client.chat.completions.create(model=f"{FINE_TUNE}:gentle", max_tokens=6,
                                                 messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert (await client.models.retrieve(FINE_TUNE)).model_extra["emotune"]["loaded"]

    async with httpx.AsyncClient(base_url=f"{gateway.url}/v1",
                                 headers={"Authorization": f"Bearer {API_KEYS[0]}"}) as http:
        plain = await http.get(f"/models/{FINE_TUNE}/gguf/Modelfile")
        styled = await http.get(f"/models/{FINE_TUNE}:毒舌/gguf/Modelfile")
        weights = await http.get(f"/models/{FINE_TUNE}:毒舌/gguf/model.gguf")
    assert plain.text == MODELFILE
    assert styled.status_code == 200 and styled.text.startswith(MODELFILE.rstrip("\n"))
    assert styled.text.endswith('\nSYSTEM """Answer with a sharp tongue; never say \\"\\"\\"."""\n')
    assert int(styled.headers["content-length"]) == len(styled.content)
    assert weights.content == b"GGUF-not-really"

    with pytest.raises(openai.PermissionDeniedError, match="not a published fine-tune"):
        await client.models.delete(MODEL)
    with pytest.raises(openai.BadRequestError, match="delete the model"):
        await client.models.delete(f"{FINE_TUNE}:gentle")
    deleted = await client.models.delete(FINE_TUNE)
    assert deleted.id == FINE_TUNE and deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve(FINE_TUNE)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model=f"{FINE_TUNE}:gentle", max_tokens=4,
                                             messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        await client.models.delete(FINE_TUNE)
    assert read_manifest(store, ADAPTER)  # kept: only the record went


async def test_deleting_with_its_artifacts(inference, client, smollm_dir, tmp_path):
    store = inference.service.registry.store
    await asyncio.to_thread(publish_fine_tune, store, smollm_dir, tmp_path / "adapter", ADAPTER_TO_DELETE)
    deleted = await client.models.delete(FINE_TUNE, extra_query={"delete_artifacts": "true"})
    assert deleted.deleted
    with pytest.raises(NotFound):
        read_manifest(store, ADAPTER_TO_DELETE)
