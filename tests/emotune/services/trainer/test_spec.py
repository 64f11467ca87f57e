"""The job spec: proto zeros mean defaults, an explicit ``packing=false`` survives, bad values name the field."""

from __future__ import annotations

import pytest

from emotune.errors import InvalidInput
from emotune.services.trainer.spec import DEFAULT_TARGETS, TrainingSpec, spec_from_proto, spec_warnings
from emotune.v1 import trainer_pb2


def test_proto_zeros_take_the_defaults_and_packing_has_presence():
    spec = TrainingSpec.parse(spec_from_proto(trainer_pb2.TrainingSpec(dataset_artifact="d", seed=9)))
    assert (spec.backend, spec.max_length, spec.packing, spec.lora.r, spec.seed) == ("hf", 512, True, 8, 9)
    assert spec.lora.target_modules == DEFAULT_TARGETS
    off = TrainingSpec.parse(spec_from_proto(trainer_pb2.TrainingSpec(dataset_artifact="d", packing=False)))
    assert off.packing is False
    lora = trainer_pb2.LoraConfig(r=32, alpha=64, target_modules=["q_proj", "v_proj"])
    custom = TrainingSpec.parse(spec_from_proto(trainer_pb2.TrainingSpec(dataset_artifact="d", lora=lora)))
    assert (custom.lora.r, custom.lora.alpha, custom.lora.target_modules) == (32, 64, ["q_proj", "v_proj"])


@pytest.mark.parametrize(("data", "field"), [
    ({"dataset_artifact": "d", "learning_rate": 3}, "learning_rate"),
    ({"dataset_artifact": "d", "backend": "llamafactory"}, "backend"),
    ({"dataset_artifact": "d", "lora": {"r": 0}}, "lora.r"),
    ({"dataset_artifact": "d", "typo_field": 1}, "typo_field"),
    ({}, "dataset_artifact"),
])
def test_bad_values_name_the_field(data, field):
    with pytest.raises(InvalidInput) as info:
        TrainingSpec.parse(data, "spec.yaml")
    assert info.value.field == field and info.value.file == "spec.yaml"


def test_quantization_needs_cuda_on_the_hf_backend_and_mixing_needs_a_set():
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="CUDA"):
            TrainingSpec.parse({"dataset_artifact": "d", "quantization": "4bit"})
    with pytest.raises(InvalidInput, match="mix_dataset_artifact"):
        TrainingSpec.parse({"dataset_artifact": "d", "mix_ratio": 0.5})


def test_warnings_for_specs_likely_to_overfit_or_undertrain():
    spec = TrainingSpec(dataset_artifact="d", epochs=20, eval_fraction=0)
    text = " ".join(spec_warnings(spec, train_samples=12, optimizer_steps=6))
    assert "12 training samples" in text and "6 optimizer steps" in text and "20 epochs" in text
    assert "eval_fraction is 0" in text
    assert spec_warnings(TrainingSpec(dataset_artifact="d", epochs=3), 500, 300) == []
