"""Laying out the validation outputs (reading the dataset to validate is :mod:`emotune.data.datasets`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emotune.data.records import Record, dumps_records

REPORT_FILE = "report.json"


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
