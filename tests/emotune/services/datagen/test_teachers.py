"""Both teacher adapters against the real test teacher server: replies, and every error shape classified."""

from __future__ import annotations

import pytest

from emotune.services.datagen.teachers import (
    FailureKind,
    OpenAICompatibleTeacher,
    TeacherError,
    ZhipuAITeacher,
    classify_http_error,
    parse_retry_after,
)
from tests.support.teacher_server import Fault

MESSAGES = [{"role": "system", "content": "你是一个温柔的助手"}, {"role": "user", "content": "今天好累"}]

# fault -> (reason, kind)
EXPECTED = {
    Fault.RATE_LIMIT: ("rate_limited", FailureKind.RETRYABLE),
    Fault.SERVER_ERROR: ("server_error", FailureKind.RETRYABLE),
    Fault.UNAVAILABLE: ("server_error", FailureKind.RETRYABLE),
    Fault.TIMEOUT: ("timeout", FailureKind.RETRYABLE),
    Fault.MALFORMED: ("malformed_response", FailureKind.RETRYABLE),
    Fault.NO_CHOICES: ("malformed_response", FailureKind.RETRYABLE),
    Fault.EMPTY: ("empty_reply", FailureKind.RETRYABLE),
    Fault.CONTENT_FILTER: ("content_safety", FailureKind.FINAL),
    Fault.SAFETY_ZHIPUAI: ("content_safety", FailureKind.FINAL),
    Fault.SAFETY_DASHSCOPE: ("content_safety", FailureKind.FINAL),
    Fault.SAFETY_DASHSCOPE_NATIVE: ("content_safety", FailureKind.FINAL),
    Fault.AUTH: ("auth", FailureKind.FATAL),
    Fault.QUOTA: ("quota", FailureKind.FATAL),
}


@pytest.fixture
def openai_teacher(teacher):
    teacher.hang_seconds = 3.0
    return OpenAICompatibleTeacher(teacher.base_url, "teacher-test", None, timeout=0.5)


@pytest.fixture
def zhipuai_teacher(teacher):
    teacher.hang_seconds = 3.0
    return ZhipuAITeacher(teacher.zhipuai_base_url, "glm-4-flash", "abc.secret", timeout=0.5, max_workers=2)


async def test_openai_reply_and_request(teacher, openai_teacher):
    reply = await openai_teacher.complete(MESSAGES, temperature=0.3, max_tokens=64)
    assert reply.text == teacher.responder({"messages": MESSAGES}) and reply.finish_reason == "stop"
    assert reply.model == "teacher-test" and reply.response_id.startswith("chatcmpl-")
    assert reply.usage["total_tokens"] > 0
    call = teacher.calls[-1]
    assert call.flavour == "openai" and call.messages == MESSAGES
    assert call.body["temperature"] == 0.3 and call.body["max_tokens"] == 64
    assert call.authorization == ""  # no key configured: none sent (local vLLM, LMDeploy, an open gateway)
    await openai_teacher.aclose()


@pytest.mark.parametrize("fault", list(EXPECTED), ids=str)
async def test_openai_errors_are_classified(teacher, openai_teacher, fault):
    teacher.always("", fault)
    with pytest.raises(TeacherError) as info:
        await openai_teacher.complete(MESSAGES, temperature=0.3, max_tokens=64)
    reason, kind = EXPECTED[fault]
    assert (info.value.reason, info.value.kind) == (reason, kind), info.value
    if fault in (Fault.RATE_LIMIT, Fault.UNAVAILABLE):
        assert info.value.retry_after == pytest.approx(0.05)
    if fault is Fault.SAFETY_ZHIPUAI:
        assert info.value.code == "1301" and info.value.status == 400
    await openai_teacher.aclose()


async def test_dashscope_route_safety_shape(teacher):
    """DashScope's compatible mode is just another OpenAI-compatible base URL."""
    teacher.always("", Fault.SAFETY_DASHSCOPE)
    dashscope = OpenAICompatibleTeacher(teacher.dashscope_base_url, "qwen-plus", "sk-test", timeout=2)
    with pytest.raises(TeacherError) as info:
        await dashscope.complete(MESSAGES, temperature=0.5, max_tokens=32)
    assert info.value.reason == "content_safety" and info.value.code == "data_inspection_failed"
    assert teacher.calls[-1].flavour == "dashscope" and teacher.calls[-1].authorization == "Bearer sk-test"
    await dashscope.aclose()


async def test_zhipuai_sdk_reply(teacher, zhipuai_teacher):
    reply = await zhipuai_teacher.complete(MESSAGES, temperature=0.3, max_tokens=64)
    assert reply.text == teacher.responder({"messages": MESSAGES})
    call = teacher.calls[-1]
    assert call.flavour == "zhipuai" and call.path == "/api/paas/v4/chat/completions"
    assert call.authorization == "Bearer abc.secret" and call.body["model"] == "glm-4-flash"
    await zhipuai_teacher.aclose()


@pytest.mark.parametrize("fault", [Fault.SAFETY_ZHIPUAI, Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.TIMEOUT,
                                   Fault.MALFORMED, Fault.AUTH, Fault.QUOTA], ids=str)
async def test_zhipuai_errors_are_classified(teacher, zhipuai_teacher, fault):
    teacher.always("", fault)
    with pytest.raises(TeacherError) as info:
        await zhipuai_teacher.complete(MESSAGES, temperature=0.3, max_tokens=64)
    assert (info.value.reason, info.value.kind) == EXPECTED[fault], info.value
    if fault is Fault.SAFETY_ZHIPUAI:
        assert info.value.code == "1301"
    if fault is Fault.RATE_LIMIT:
        assert info.value.code == "1302" and info.value.retry_after == pytest.approx(0.05)
    await zhipuai_teacher.aclose()


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_classification_of_other_provider_shapes():
    deepseek = classify_http_error(400, {"error": {"message": "Content Exists Risk", "type": "invalid_request_error"}})
    assert deepseek.reason == "content_safety" and deepseek.kind is FailureKind.FINAL
    too_long = classify_http_error(400, {"error": {"code": "1261", "message": "Prompt 超长"}})
    assert too_long.reason == "bad_request" and too_long.kind is FailureKind.FINAL
    unknown_model = classify_http_error(400, {"error": {"code": "1211", "message": "模型不存在"}})
    assert unknown_model.reason == "model_not_found" and unknown_model.kind is FailureKind.FATAL
    html = classify_http_error(502, "<html>Bad Gateway</html>")
    assert html.reason == "server_error" and html.retryable
