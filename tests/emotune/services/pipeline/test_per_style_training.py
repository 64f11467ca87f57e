"""One adapter per style: the training stage's combined result that serving, the report and the UI read."""

from __future__ import annotations

import pytest

from emotune.errors import FailedPrecondition
from emotune.services.pipeline.stages import per_style_training


def _result(prefix: str, loss: float) -> dict:
    return {"adapter_artifact": f"{prefix}/adapter", "merged_artifact": f"{prefix}/merged",
            "plots": {"loss_curve": f"{prefix}/report/files/loss_curve.png"},
            "loss_curve": {"train": [{"step": 1, "loss": loss}]}, "train_samples": 30, "trained_tokens": 900}


def test_the_first_style_leads_and_every_style_keeps_its_adapter_curve_and_plot():
    combined = per_style_training({"温柔": _result("m/style1", 2.0), "毒舌": _result("m/style2", 3.0)})
    assert combined["adapter_artifact"] == "m/style1/adapter"  # what the plain model id serves
    assert combined["style_adapters"] == {"温柔": "m/style1/adapter", "毒舌": "m/style2/adapter"}
    assert combined["loss_curve"] == {"train 温柔": [{"step": 1, "loss": 2.0}], "train 毒舌": [{"step": 1, "loss": 3.0}]}
    assert combined["plots"] == {"loss_curve": "m/style1/report/files/loss_curve.png",
                                 "loss_curve_2": "m/style2/report/files/loss_curve.png"}
    assert (combined["train_samples"], combined["trained_tokens"]) == (60, 1800)
    assert combined["styles"]["毒舌"]["merged_artifact"] == "m/style2/merged"


def test_a_style_without_an_adapter_is_a_failed_precondition():
    with pytest.raises(FailedPrecondition, match="no adapter_artifact"):
        per_style_training({"温柔": _result("m/style1", 2.0), "毒舌": {"merged_artifact": "m/style2/merged"}})
