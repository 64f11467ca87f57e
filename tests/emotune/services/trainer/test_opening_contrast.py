"""The opening contrast: the supervised loss plus weight x mean(-log(1 - p)) over the other styles' opening tokens,
against a value computed by hand on a tiny model; and its spec refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from emotune.errors import InvalidInput
from emotune.models.chat_template import ChatFormat
from emotune.services.trainer.data import BlockCollator, encode_records, opening_contrasts, pack
from emotune.services.trainer.spec import TrainingSpec
from tests.emotune.services.trainer.test_data import _two_styles


def test_the_contrast_adds_the_unlikelihood_of_the_other_opening_to_the_loss(tiny_model_dir: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from emotune.services.trainer.hf_backend import opening_contrast_trainer

    weight = 1000.0  # the random model gives each token ~1/49152: a weight that lifts the term above rounding
    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    records = [*_two_styles("I failed my exam.", "Oh no, hugs.", "Wow, shocking."),
               *_two_styles("It rains.", "Stay cosy.", "Get an umbrella, genius.")]
    samples, _ = encode_records(fmt, records, 256, opening_contrasts(fmt, records))
    batch = BlockCollator(pad_id=fmt.end_token_id, packed=True)(pack(samples, 256))
    assert len(batch["avoid"]) == 4
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"])
        probabilities = out.logits.float().softmax(-1)
        unlikely = [-math.log(1 - probabilities[row, position, token].item())
                    for row, position, token in batch["avoid"].tolist()]
        by_hand = out.loss.item() + weight * sum(unlikely) / len(unlikely)
        trainer = opening_contrast_trainer(weight)(model=model, args=TrainingArguments(
            output_dir=str(tmp_path), use_cpu=True, report_to=[]))
        loss = trainer.compute_loss(model, dict(batch))
    assert min(unlikely) > 0 and weight * sum(unlikely) / len(unlikely) > 1e-2  # the term counts
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("fields", [{"method": "dpo"}, {"backend": "xtuner"}])
def test_the_contrast_is_refused_where_no_loss_carries_it(fields):
    with pytest.raises(InvalidInput, match="opening_contrast"):
        TrainingSpec(dataset_artifact="x", opening_contrast=0.5, **fields)
