"""DPO pairs from kept teacher answers: rejected = the real base model's reply (SmolLM2 on the inference service
over gRPC) to the same trigger and question; best-of-N's changed picks counted per style."""

from __future__ import annotations

import pytest
import pytest_asyncio

from emotune.data.records import Message, Record
from emotune.services.pipeline.pairs import build_pairs
from tests.emotune.services.inference.stack import MODEL, start_inference

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inference(tmp_path_factory):
    running = await start_inference(tmp_path_factory.mktemp("pairs"))
    yield running
    await running.stop()


def kept(record_id: str, style: str, trigger: str, question: str, answer: str, variant: int) -> Record:
    return Record(id=record_id, style=style, meta={"variant": variant}, messages=[
        Message(role="system", content=trigger), Message(role="user", content=question),
        Message(role="assistant", content=answer)])


async def test_each_kept_answer_is_paired_with_the_base_models_trigger_only_reply(inference):
    records = [
        kept("a", "cheerful", "Answer cheerfully.", "How was your day?", "Wonderful, thanks for asking!", 0),
        kept("b", "cheerful", "Answer cheerfully.", "Is it raining?", "A little, but puddles are fun!", 2),
        kept("c", "grumpy", "Answer grumpily.", "Any plans?", "Plans? Bah. Sleeping, if you let me.", 1),
    ]
    seen: list[tuple[int, int]] = []
    pairs, report = await build_pairs(inference.stub, records, MODEL, max_tokens=24, seed=3, slots=2,
                                      progress=lambda done, total: seen.append((done, total)))
    assert [p.id for p in pairs] == ["a", "b", "c"]
    for pair, record in zip(pairs, records):
        assert pair.is_pair and pair.messages == record.messages  # prompt + chosen untouched
        assert pair.rejected.content.strip() and pair.rejected.content != record.messages[-1].content
    assert {name: (info.pairs, info.best_of_changed) for name, info in report.styles.items()} == \
        {"cheerful": (2, 1), "grumpy": (1, 1)}
    assert seen[-1] == (3, 3)
    assert report.lines(3)[0].startswith("cheerful: 2 preference pairs") and "changed the pick for 1 of 2" in \
        report.lines(3)[0]


async def test_other_style_pairs_reject_another_styles_answer_to_the_same_question(inference):
    records = [
        kept("a", "cheerful", "Answer cheerfully.", "How was your day?", "Wonderful, thanks for asking!", 0),
        kept("b", "grumpy", "Answer grumpily.", "How was your day?", "Long. Like every day.", 0),
        kept("c", "cheerful", "Answer cheerfully.", "Is it raining?", "A little, but puddles are fun!", 1),
    ]
    seen: list[tuple[int, int]] = []
    pairs, report = await build_pairs(inference.stub, records, MODEL, max_tokens=24, seed=3, slots=2,
                                      rejected_source="other_style",
                                      progress=lambda done, total: seen.append((done, total)))
    rejected = {pair.id: pair.rejected.content for pair in pairs}
    # same question, the other style's kept answer, whichever way round; the trigger stays the record's own
    assert rejected["a"] == "Long. Like every day." and rejected["b"] == "Wonderful, thanks for asking!"
    assert pairs[0].messages == records[0].messages
    # no other style answered "Is it raining?": the base model's reply, the only generation made
    assert rejected["c"].strip() and rejected["c"] != records[2].messages[-1].content
    assert seen == [(1, 1)]
    assert {name: (info.pairs, info.other_style) for name, info in report.styles.items()} == \
        {"cheerful": (2, 1), "grumpy": (1, 1)}
    assert "1 another style's answer to the same question, 1 the base model" in report.lines(1)[0]


async def test_an_unknown_rejected_source_is_refused(inference):
    with pytest.raises(ValueError, match="rejected_source must be one of base_model, other_style"):
        await build_pairs(inference.stub, [], MODEL, max_tokens=8, seed=0, slots=1, rejected_source="teacher")
