"""Retries, Retry-After, concurrency caps and output parsing around a real teacher endpoint."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from emotune.services.datagen.plan import parse_dialogue
from emotune.services.datagen.request_policy import ProviderLimiter, RetryPolicy, TeacherCaller
from emotune.services.datagen.teachers import FailureKind, OpenAICompatibleTeacher, TeacherError
from tests.support.teacher_server import Fault

FAST = RetryPolicy(max_retries=3, initial=0.01, max_wait=2.0)


@pytest.fixture
async def make_caller(teacher):
    callers: list[TeacherCaller] = []

    def make(policy=FAST, concurrency=32, rps=0.0) -> TeacherCaller:
        client = OpenAICompatibleTeacher(teacher.base_url, "teacher-test", None, timeout=2.0)
        callers.append(TeacherCaller(client, ProviderLimiter(concurrency), policy, rps))
        return callers[-1]

    yield make
    for caller in callers:
        await caller.teacher.aclose()


def _ask(caller, text, parse=None):
    return caller.ask([{"role": "user", "content": text}], temperature=0.5, max_tokens=32, parse=parse)


async def test_transient_errors_are_retried_until_success(teacher, make_caller):
    teacher.script("flaky", Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.MALFORMED)
    answer = await _ask(make_caller(), "flaky question")
    assert answer.attempts == 4 and answer.retry_reasons == ["rate_limited", "server_error", "malformed_response"]
    assert [c.fault for c in teacher.calls] == [Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.MALFORMED, Fault.OK]


async def test_retry_after_is_honoured(teacher, make_caller):
    teacher.retry_after = 0.4
    teacher.script("busy", Fault.RATE_LIMIT)
    await _ask(make_caller(), "busy")
    first, second = teacher.calls
    assert second.started - first.finished >= 0.4  # not the 0.01 s exponential start


async def test_rate_limit_holds_every_request_to_the_provider(teacher, make_caller):
    """After a 429 with Retry-After, the other workers wait too instead of hammering the provider."""
    teacher.retry_after = 0.4
    teacher.script("first", Fault.RATE_LIMIT)
    caller = make_caller()
    first = asyncio.create_task(_ask(caller, "first"))
    for _ in range(1000):  # until the client has seen the 429 and put the provider on hold
        if caller.limiter.held_for > 0:
            break
        await asyncio.sleep(0.005)
    assert caller.limiter.held_for > 0, "a 429 with Retry-After did not hold the provider"
    await _ask(caller, "second")
    await first
    second_call = next(c for c in teacher.calls if "second" in c.prompt_text)
    assert second_call.started >= teacher.calls[0].finished + 0.35


async def test_final_errors_are_not_retried(teacher, make_caller):
    teacher.always("sensitive", Fault.SAFETY_ZHIPUAI)
    with pytest.raises(TeacherError) as info:
        await _ask(make_caller(), "a sensitive question")
    assert info.value.kind is FailureKind.FINAL and info.value.attempts == 1
    assert len(teacher.calls) == 1


async def test_retries_run_out(teacher, make_caller):
    teacher.always("down", Fault.SERVER_ERROR)
    with pytest.raises(TeacherError) as info:
        await _ask(make_caller(RetryPolicy(2, 0.01, 0.05)), "down")
    assert info.value.reason == "server_error" and info.value.attempts == 3
    assert info.value.retry_reasons == ["server_error", "server_error"]
    assert len(teacher.calls) == 3


async def test_unparsable_output_is_retried(teacher, make_caller):
    dialogue = [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在呢~"}]
    replies = iter(["好的，这是对话：user: 在吗", "```json\n" + json.dumps(dialogue, ensure_ascii=False) + "\n```"])
    teacher.responder = lambda body: next(replies)
    answer = await _ask(make_caller(), "write a dialogue", parse=parse_dialogue)
    assert answer.attempts == 2 and answer.retry_reasons == ["malformed_output"]
    assert [m.content for m in answer.parsed] == ["在吗", "在呢~"]


async def test_concurrency_cap_is_respected(teacher, make_caller):
    teacher.latency = 0.3
    caller = make_caller(concurrency=5)
    await asyncio.gather(*(_ask(caller, f"q{i}") for i in range(20)))
    assert teacher.max_in_flight == 5


async def test_requests_per_second(teacher, make_caller):
    caller = make_caller(rps=20)
    started = time.monotonic()
    await asyncio.gather(*(_ask(caller, f"q{i}") for i in range(30)))
    # aiolimiter admits a burst of 20, then 20/s: 30 requests need at least ~0.5 s
    assert time.monotonic() - started >= 0.45
