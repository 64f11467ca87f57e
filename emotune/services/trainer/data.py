"""Training data: dataset files -> records -> held-out split + general-set mixing -> token blocks.

The split is a pure function of (seed, record ids), so a resumed job trains and evaluates on exactly the same
samples. Samples longer than ``max_length`` are dropped and counted, never truncated: a truncated reply loses
its end token and teaches the model not to stop.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from emotune.data.datasets import read_dataset
from emotune.data.records import Record, dumps_records
from emotune.data.textio import ReadReport
from emotune.errors import InvalidInput
from emotune.models.chat_template import IGNORE_INDEX, ChatFormat, EncodedSample


def read_records(path: Path) -> tuple[list[Record], ReadReport]:
    """Records of a fetched dataset file (emotune JSONL, :func:`emotune.data.datasets.fetch_dataset`), read by the
    validator's rule; bad lines are reported with their line and field, and a file with no good line is refused."""
    records, report = read_dataset(path.read_bytes(), path.name)
    if not records:
        detail = f": {report.errors[0].line}: {report.errors[0].message}" if report.errors else ""
        raise InvalidInput(f"no usable record in the dataset{detail}", file=path.name)
    return records, report


def only_style(content: bytes, style: str, source: str) -> bytes:
    """The dataset's records of one style (a per-style adapter's training set): every backend and the export's
    parity check then read only them. None is a clear error naming the styles there are."""
    records, _ = read_dataset(content, source)
    kept = [record for record in records if record.style == style]
    if not kept:
        present = sorted({record.style or "(none)" for record in records})
        raise InvalidInput(f"the dataset has no record of style {style!r} (styles: {', '.join(present)})",
                           field="style", file=source)
    return dumps_records(kept).encode("utf-8")


def _rank(seed: int, record: Record) -> str:
    return hashlib.sha256(f"{seed}:{record.id}".encode()).hexdigest()


@dataclass
class Split:
    train: list[Record]
    eval: list[Record]
    mixed_in: int = 0


def split_records(records: list[Record], eval_fraction: float, seed: int,
                  general: list[Record] | None = None, mix_ratio: float = 0.0) -> Split:
    """Held-out samples per style (so every style is evaluated); general samples join the training side only."""
    by_style: dict[str | None, list[Record]] = defaultdict(list)
    for record in records:
        by_style[record.style].append(record)
    train, held_out = [], []
    for style in sorted(by_style, key=lambda s: s or ""):
        style_records = by_style[style]
        ordered = sorted(style_records, key=lambda r: _rank(seed, r))
        n_eval = round(len(ordered) * eval_fraction) if eval_fraction > 0 else 0
        if eval_fraction > 0 and len(ordered) >= 4:
            n_eval = max(1, n_eval)
        held_out += ordered[:n_eval]
        train += ordered[n_eval:]
    mixed = 0
    if general and mix_ratio > 0:
        wanted = min(len(general), round(len(train) * mix_ratio))
        mixed_in = sorted(general, key=lambda r: _rank(seed, r))[:wanted]
        train += mixed_in
        mixed = len(mixed_in)
    train.sort(key=lambda r: _rank(seed, r))  # independent of the input order, then a seeded shuffle
    random.Random(seed).shuffle(train)
    return Split(train, held_out, mixed)


@dataclass
class EncodeReport:
    encoded: int = 0
    dropped_too_long: list[str] = field(default_factory=list)
    trained_tokens: int = 0
    total_tokens: int = 0


def encode_records(fmt: ChatFormat, records: list[Record], max_length: int) -> tuple[list[EncodedSample],
                                                                                      EncodeReport]:
    report, samples = EncodeReport(), []
    for record in records:
        sample = fmt.encode([m.model_dump() for m in record.messages], source=f"record {record.id}")
        if len(sample.input_ids) > max_length:
            report.dropped_too_long.append(record.id)
            continue
        samples.append(sample)
        report.encoded += 1
        report.trained_tokens += sample.trained_tokens
        report.total_tokens += len(sample.input_ids)
    return samples, report


@dataclass
class Block:
    """Several samples in one row: position ids restart at 0 for each, which tells attention to keep them
    apart (transformers builds a block-diagonal causal mask from them when no attention mask is given)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(samples: list[EncodedSample], max_length: int) -> list[Block]:
    """First-fit-decreasing bin packing of samples into blocks of at most ``max_length`` tokens."""
    bins: list[list[EncodedSample]] = []
    free: list[int] = []
    for sample in sorted(samples, key=lambda s: len(s.input_ids), reverse=True):
        size = len(sample.input_ids)
        slot = next((i for i, room in enumerate(free) if room >= size), None)
        if slot is None:
            bins.append([sample])
            free.append(max_length - size)
        else:
            bins[slot].append(sample)
            free[slot] -= size
    return [_concat(group) for group in bins]


def single_blocks(samples: list[EncodedSample]) -> list[Block]:
    return [_concat([s]) for s in samples]


def _concat(group: list[EncodedSample]) -> Block:
    ids, labels, positions = [], [], []
    for sample in group:
        ids += sample.input_ids
        # The first token of each sample predicts nothing from the previous sample.
        labels += [IGNORE_INDEX, *sample.labels[1:]]
        positions += list(range(len(sample.input_ids)))
    return Block(ids, labels, positions)


class BlockCollator:
    """Pads a batch of blocks to its longest row.

    Packed rows carry position ids and no attention mask (the padding forms its own sequence and has no labels);
    unpacked rows carry the usual attention mask. ``tokens_seen`` counts real tokens for the throughput figure.
    """

    def __init__(self, pad_id: int, packed: bool) -> None:
        self.pad_id, self.packed, self.tokens_seen = pad_id, packed, 0

    def __call__(self, blocks: list[Block]) -> dict:
        import torch

        width = max(len(b) for b in blocks)
        ids, labels, positions, mask = [], [], [], []
        for block in blocks:
            pad = width - len(block)
            ids.append(block.input_ids + [self.pad_id] * pad)
            labels.append(block.labels + [IGNORE_INDEX] * pad)
            positions.append(block.position_ids + list(range(pad)))
            mask.append([1] * len(block) + [0] * pad)
            self.tokens_seen += len(block)
        batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if self.packed:
            batch["position_ids"] = torch.tensor(positions)
        else:
            batch["attention_mask"] = torch.tensor(mask)
        return batch
