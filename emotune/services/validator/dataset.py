"""Reading the dataset to validate (from a file or the artifact store) and laying out the validation outputs.

Bad input never loses good samples: a broken JSON line, a record missing a field and a line in another encoding
than the rest of the file (a GBK line pasted into a UTF-8 file) are each reported with file, line and field, and
every other line is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emotune.data.formats import DatasetFormat, parse_dataset
from emotune.data.records import Record, dumps_records
from emotune.data.textio import LineError, ReadReport, decode_bytes
from emotune.errors import InvalidInput, NotFound
from emotune.store.artifacts import read_file, read_manifest
from emotune.store.base import ArtifactStore

# Dataset artifacts (datagen's output, the validator's kept / rejected sets) keep their records in this file.
RECORDS_FILE = "records.jsonl"
REPORT_FILE = "report.json"


def _has_utf8_text(line: bytes) -> bool:
    try:
        return not line.isascii() and bool(line.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def decode_dataset(data: bytes, source: str) -> tuple[str, list[LineError]]:
    """The file's text. A file wholly in UTF-8 or GBK decodes as such; in a UTF-8 file, lines that are not
    UTF-8 are blanked (line numbers stay right) and reported instead of failing the whole file."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return body.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines = body.split(b"\n")
    if not any(_has_utf8_text(line) for line in lines):
        return decode_bytes(data, source), []  # one legacy encoding throughout (GBK), or refused as a whole
    errors, text_lines = [], []
    for number, line in enumerate(lines, start=1):
        try:
            text_lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            errors.append(LineError(source, number, f"line is not UTF-8 (invalid byte 0x{line[exc.start]:02x} at "
                                                    f"byte {exc.start}; the rest of the file is UTF-8): re-save it"))
            text_lines.append("")
    return "\n".join(text_lines), errors


def read_dataset(data: bytes, source: str, fmt: DatasetFormat = "emotune",
                 style: str | None = None) -> tuple[list[Record], ReadReport]:
    """Records of a dataset file (any format of :mod:`emotune.data.formats`); bad lines go to the report."""
    text, encoding_errors = decode_dataset(data, source)
    records, report = parse_dataset(text, fmt, source=source, style=style)
    report.errors = sorted([*encoding_errors, *report.errors], key=lambda e: e.line)
    return records, report


def load_from_store(store: ArtifactStore, key: str) -> tuple[list[Record], ReadReport]:
    """A dataset artifact (its ``records.jsonl``) or a plain JSONL object at ``key``."""
    try:
        manifest = read_manifest(store, key)
    except NotFound:
        if store.exists(key):
            return read_dataset(store.get_bytes(key), key)
        raise NotFound(f"no dataset artifact or object at {key!r}", field="dataset_artifact") from None
    if RECORDS_FILE not in manifest.files:
        raise InvalidInput(f"artifact {key!r} has no {RECORDS_FILE} (files: {', '.join(sorted(manifest.files))})",
                           field="dataset_artifact")
    return read_dataset(read_file(store, key, RECORDS_FILE), f"{key}/{RECORDS_FILE}")


@dataclass
class OutputFiles:
    """What a validation pass produces, as bytes: the kept set, the rejected set (reasons in each record's
    ``meta.validation``), the report JSON and its plots."""

    kept: bytes
    rejected: bytes
    report: dict[str, Any]
    plots: dict[str, bytes]

    @property
    def report_json(self) -> bytes:
        return json.dumps(self.report, ensure_ascii=False, indent=1).encode("utf-8")

    def report_files(self) -> dict[str, bytes]:
        return {REPORT_FILE: self.report_json, **{f"{name}.png": png for name, png in self.plots.items()}}


def output_files(kept: list[Record], rejected: list[Record], report: dict[str, Any],
                 plots: dict[str, bytes]) -> OutputFiles:
    return OutputFiles(dumps_records(kept).encode("utf-8"), dumps_records(rejected).encode("utf-8"), report, plots)
