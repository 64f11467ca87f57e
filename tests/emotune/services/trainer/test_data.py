"""Training data: deterministic stratified split, mixing, packing, and that packed samples stay apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotune.data.datasets import read_dataset
from emotune.data.records import Message, Record, dumps_records, record_id
from emotune.errors import InvalidInput
from emotune.models.chat_template import IGNORE_INDEX, ChatFormat
from emotune.services.trainer.data import (
    BlockCollator,
    encode_records,
    only_style,
    pack,
    read_records,
    single_blocks,
    split_records,
)
from tests.emotune.services.trainer.conftest import styled_records


def _general(n: int) -> list[Record]:
    return [Record(id=record_id("general", i), style=None,
                   messages=[Message(role="user", content=f"what is {i} plus {i}?"),
                             Message(role="assistant", content=f"{2 * i}.")]) for i in range(n)]


def test_split_is_stable_stratified_and_mixes_only_into_training():
    records = styled_records(30)
    cool = [r.model_copy(update={"id": r.id + "c", "style": "cool"}) for r in records[:10]]
    split = split_records(records + cool, 0.2, seed=7, general=_general(50), mix_ratio=0.5)
    again = split_records(list(reversed(records + cool)), 0.2, seed=7, general=_general(50), mix_ratio=0.5)
    assert [r.id for r in split.eval] == [r.id for r in again.eval]  # a resumed job holds out the same samples
    assert {r.style for r in split.eval} == {"gentle", "cool"}  # every style is evaluated
    assert len([r for r in split.eval if r.style == "gentle"]) == 6
    assert split.mixed_in == round(0.5 * 32) and all(r.style is not None for r in split.eval)
    other_seed = split_records(records + cool, 0.2, seed=8)
    assert [r.id for r in other_seed.eval] != [r.id for r in split.eval]


def test_too_long_samples_are_dropped_not_truncated(smollm2_dir: Path):
    fmt = ChatFormat.from_pretrained(smollm2_dir)
    records = styled_records(6)
    samples, report = encode_records(fmt, records, max_length=70)
    assert report.dropped_too_long and len(samples) + len(report.dropped_too_long) == 6
    for sample in samples:  # what is kept still ends its reply with the end token
        trained = [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX]
        assert trained[-1] == fmt.end_token_id


def test_packing_fills_blocks_and_restarts_positions(smollm2_dir: Path):
    fmt = ChatFormat.from_pretrained(smollm2_dir)
    samples, report = encode_records(fmt, styled_records(30), max_length=256)
    blocks = pack(samples, 256)
    assert sum(len(b) for b in blocks) == report.total_tokens and all(len(b) <= 256 for b in blocks)
    assert len(blocks) < len(samples) / 3
    assert report.total_tokens / (len(blocks) * 256) > 0.8
    for block in blocks:
        starts = [i for i, p in enumerate(block.position_ids) if p == 0]
        assert all(block.labels[i] == IGNORE_INDEX for i in starts)  # nothing predicted across samples


def test_packed_rows_compute_exactly_what_separate_samples_do(tiny_model_dir: Path):
    """Position ids restarting at 0 (and no attention mask) must keep samples from attending to each other."""
    import torch
    from transformers import AutoModelForCausalLM

    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    samples, _ = encode_records(fmt, styled_records(6), max_length=512)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    model.config.use_cache = False
    packed = BlockCollator(pad_id=fmt.end_token_id, packed=True)(pack(samples, 512))
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        together = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0]
        offset = 0
        order = sorted(samples, key=lambda s: len(s.input_ids), reverse=True)
        for sample in order:
            alone = model(input_ids=torch.tensor([sample.input_ids])).logits[0]
            n = len(sample.input_ids)
            torch.testing.assert_close(together[offset:offset + n], alone, atol=2e-4, rtol=1e-3)
            offset += n
    unpacked = BlockCollator(pad_id=fmt.end_token_id, packed=False)(single_blocks(samples[:3]))
    assert "attention_mask" in unpacked and "position_ids" not in unpacked


def test_bad_dataset_lines_name_their_line(tmp_path: Path):
    good = dumps_records(styled_records(2))
    path = tmp_path / "records.jsonl"
    path.write_text(good + '{"id": "x", "messages": []}\n{broken\n', encoding="utf-8")
    records, report = read_records(path)
    assert len(records) == 2 and [e.line for e in report.errors] == [3, 4]
    path.write_text("{broken\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="records.jsonl"):
        read_records(path)


def test_only_style_keeps_one_styles_records_and_names_the_styles_when_none_match():
    records = styled_records(6)
    cool = [r.model_copy(update={"id": r.id + "c", "style": "cool"}) for r in records[:4]]
    content = dumps_records(records + cool).encode()
    kept, _ = read_dataset(only_style(content, "cool", "validated/kept"), "kept")
    assert [r.id for r in kept] == [r.id for r in cool]
    with pytest.raises(InvalidInput, match=r"no record of style '毒舌' \(styles: cool, gentle\)") as error:
        only_style(content, "毒舌", "validated/kept")
    assert error.value.field == "style" and error.value.file == "validated/kept"
