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
from emotune.data.records import Record, other_style_answers
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


@dataclass
class TrainingSample(EncodedSample):
    """An encoded sample and the tokens its last reply should not open with (the opening contrast)."""

    avoid_first: tuple[int, ...] = ()

    @property
    def reply_start(self) -> int:
        """The index of the last reply's first token (labels mark every reply and its end token)."""
        labels = self.labels
        return next(i for i in range(len(labels) - 1, 0, -1)
                    if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX)


def opening_contrasts(fmt: ChatFormat, records: list[Record]) -> dict[str, tuple[int, ...]]:
    """Per record id: the token another style's answer to the same question opens with, asked with this record's
    trigger, where it differs from this reply's first token.

    A student trained on several styles at once learns each style's openers (抱抱你, 啧啧) faster than which
    trigger asks for which, and opens a 毒舌 reply with 抱抱你: the opening token is where it picks a style. The
    contrast makes the other style's opener unlikely at exactly that position; its logits are computed by the
    supervised step anyway, so it costs nothing.
    """
    contrasts = {}
    for number, other in other_style_answers(records).items():
        record = records[number]
        messages = [m.model_dump() for m in record.messages]
        own = TrainingSample(**vars(fmt.encode(messages, source=f"record {record.id}")))
        messages[-1] = {**messages[-1], "content": other}
        theirs = TrainingSample(**vars(fmt.encode(messages, source=f"record {record.id}")))
        avoid = theirs.input_ids[theirs.reply_start]
        if avoid != own.input_ids[own.reply_start]:
            contrasts[record.id] = (avoid,)
    return contrasts


def encode_records(fmt: ChatFormat, records: list[Record], max_length: int,
                   avoid_first: dict[str, tuple[int, ...]] | None = None) -> tuple[list[TrainingSample],
                                                                                   EncodeReport]:
    report, samples = EncodeReport(), []
    for record in records:
        encoded = fmt.encode([m.model_dump() for m in record.messages], source=f"record {record.id}")
        if len(encoded.input_ids) > max_length:
            report.dropped_too_long.append(record.id)
            continue
        samples.append(TrainingSample(encoded.input_ids, encoded.labels, (avoid_first or {}).get(record.id, ())))
        report.encoded += 1
        report.trained_tokens += encoded.trained_tokens
        report.total_tokens += len(encoded.input_ids)
    return samples, report


@dataclass
class Block:
    """Several samples in one row: position ids restart at 0 for each, which tells attention to keep them
    apart (transformers builds a block-diagonal causal mask from them when no attention mask is given).
    ``avoid``: (position, token) pairs of the opening contrast, the position's logits predicting a reply's first
    token."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    avoid: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(samples: list[TrainingSample], max_length: int) -> list[Block]:
    """First-fit-decreasing bin packing of samples into blocks of at most ``max_length`` tokens."""
    bins: list[list[TrainingSample]] = []
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


def single_blocks(samples: list[TrainingSample]) -> list[Block]:
    return [_concat([s]) for s in samples]


def _concat(group: list[TrainingSample]) -> Block:
    ids, labels, positions, avoid = [], [], [], []
    for sample in group:
        avoid += [(len(ids) + sample.reply_start - 1, token) for token in sample.avoid_first]
        ids += sample.input_ids
        # The first token of each sample predicts nothing from the previous sample.
        labels += [IGNORE_INDEX, *sample.labels[1:]]
        positions += list(range(len(sample.input_ids)))
    return Block(ids, labels, positions, avoid)


class BlockCollator:
    """Pads a batch of blocks to its longest row (at the right: the opening contrast's positions stay put).

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
        avoid = [(row, position, token) for row, block in enumerate(blocks) for position, token in block.avoid]
        if avoid:  # the opening contrast's (row, position, token), for OpeningContrastTrainer
            batch["avoid"] = torch.tensor(avoid)
        if self.packed:
            batch["position_ids"] = torch.tensor(positions)
        else:
            batch["attention_mask"] = torch.tensor(mask)
        return batch
