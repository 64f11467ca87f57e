"""A request never chooses which server secret is sent where (issue 29, item 1).

Teachers are named by the operator; a job picks one by name. A URL of the job's own is refused unless the operator
allows it, and then gets no server key and no loopback, private, link-local or unspecified target (judged on the
addresses the name resolves to). The listener below is the real loopback teacher server, recording the
Authorization header of every request it gets.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from pydantic import SecretStr

from emotune.errors import InvalidInput
from emotune.jobs.store import JobState
from emotune.services.datagen.egress import check_request_url, refusal
from emotune.services.datagen.spec import GenerationSpec, teacher_access
from emotune.services.datagen.teachers import OpenAICompatibleTeacher, TeacherError, build_teacher
from tests.emotune.services.datagen.conftest import TEST_TEACHER, name_test_teacher
from tests.support.teacher_server import ZHIPUAI_SAFETY_MESSAGE, Fault

QUESTIONS = {"questions": ["今天好累啊"]}
PUBLIC_LOOKING = "teacher.example.com"


async def _refused(service, request: dict, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        await service.start(request)
    assert info.value.details.get("field") == field, info.value
    return info.value


async def test_a_job_cannot_send_a_server_variable_to_its_own_url(service, teacher, styles_yaml, monkeypatch):
    """The reproduction of the issue: base_url = a listener, api_key_env = HOME."""
    monkeypatch.setenv("HOME", "/home/secret-home-value")
    request = {"styles_yaml": styles_yaml, "questions": QUESTIONS,
               "teacher": {"provider": "openai", "base_url": teacher.base_url, "model": "x", "api_key_env": "HOME"}}
    await _refused(service, request, "teacher.api_key_env")
    service.settings.datagen_teacher_allow_request_url = True  # not even with URLs of the job's own allowed
    await _refused(service, request, "teacher.api_key_env")
    await asyncio.sleep(0.3)
    assert teacher.calls == []


async def test_a_url_of_the_jobs_own_is_refused_unless_the_operator_allows_it(service, teacher, styles_yaml):
    request = {"styles_yaml": styles_yaml, "questions": QUESTIONS,
               "teacher": {"base_url": teacher.base_url, "model": "x"}}
    error = await _refused(service, request, "teacher.base_url")
    assert "named teacher" in error.message
    assert teacher.calls == []


async def test_allowed_urls_must_resolve_to_public_addresses(service, teacher, styles_yaml, monkeypatch):
    service.settings.datagen_teacher_allow_request_url = True
    real = socket.getaddrinfo

    def fake_dns(host, port, *args, **kwargs):  # a public-looking name that points at this machine
        if host == PUBLIC_LOOKING:
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    port = teacher.base_url.split(":")[2].split("/")[0]
    for url, why in [(teacher.base_url, "loopback"), (f"http://localhost:{port}/v1", "loopback"),
                     (f"http://{PUBLIC_LOOKING}:{port}/v1", "loopback"),
                     ("http://169.254.169.254/latest", "link-local"), ("http://10.1.2.3/v1", "private"),
                     ("http://192.168.0.7/v1", "private"), ("http://0.0.0.0:8000/v1", "unspecified"),
                     (f"http://[::1]:{port}/v1", "loopback"), ("http://[::ffff:127.0.0.1]/v1", "loopback"),
                     ("http://[fe80::1]/v1", "link-local"), ("http://100.64.0.1/v1", "public")]:
        error = await _refused(service, {"styles_yaml": styles_yaml, "questions": QUESTIONS,
                                         "teacher": {"base_url": url, "model": "x"}}, "teacher.base_url")
        assert why in error.message, (url, error.message)
    assert teacher.calls == []


def test_public_addresses_pass():
    assert refusal("93.184.216.34") is None and refusal("2606:2800:220:1:248:1893:25c8:1946") is None
    assert refusal("64:ff9b::7f00:1") and refusal("2002:7f00:1::1")  # IPv4 loopback inside NAT64 / 6to4


async def test_zhipuai_key_never_goes_to_a_request_url(service, teacher, styles_yaml):
    service.settings.zhipuai_api_key = SecretStr("abc.zhipu-secret")
    request = {"styles_yaml": styles_yaml, "questions": QUESTIONS,
               "teacher": {"provider": "zhipuai", "base_url": teacher.zhipuai_base_url, "model": "glm-4-flash"}}
    await _refused(service, request, "teacher.base_url")
    service.settings.datagen_teacher_allow_request_url = True
    await _refused(service, request, "teacher.provider")
    with pytest.raises(ValueError):
        build_teacher("zhipuai", teacher.zhipuai_base_url, "m", "abc.zhipu-secret", 5.0, 1, request_chosen=True)
    await asyncio.sleep(0.3)
    assert teacher.calls == []


async def test_unknown_names_and_a_url_beside_a_name_are_refused(service, teacher, teacher_cfg, styles_yaml):
    base = {"styles_yaml": styles_yaml, "questions": QUESTIONS}
    error = await _refused(service, {**base, "teacher": {"name": "nope"}}, "teacher.name")
    assert TEST_TEACHER in error.message and "default" in error.message
    await _refused(service, {**base, "teacher": {**teacher_cfg, "base_url": "https://api.example.com/v1"}},
                   "teacher.base_url")
    await _refused(service, {**base, "teacher": {**teacher_cfg, "provider": "zhipuai"}}, "teacher.provider")
    await _refused(service, {**base, "teacher": {**teacher_cfg, "api_key": "sk-x"}}, "teacher.api_key")


async def test_a_named_teacher_gets_the_operators_key_and_the_jobs_model(settings, service, styles_yaml,
                                                                       monkeypatch):
    from tests.support.teacher_server import TeacherServer

    monkeypatch.setenv("OPERATOR_TEACHER_KEY", "sk-operator")
    with TeacherServer(api_key="sk-operator", model_ids=("teacher-test", "other-model")) as server:
        name_test_teacher(settings, server, api_key_env="OPERATOR_TEACHER_KEY", max_concurrency=2)
        record = await service.start({"styles_yaml": styles_yaml, "questions": QUESTIONS,
                                      "teacher": {"name": TEST_TEACHER, "model": "other-model",
                                                  "max_concurrency": 10}})
        await service.runner.wait(record.job_id)
        job = service.jobs.get(record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.spec["teacher"]["name"] == TEST_TEACHER and job.spec["teacher"]["max_concurrency"] == 2
    assert "api_key_env" not in job.spec["teacher"] and "sk-operator" not in str(job.spec)
    assert {c.authorization for c in server.calls} == {"Bearer sk-operator"}
    assert {c.body["model"] for c in server.calls} == {"other-model"}


async def test_a_request_chosen_teacher_sends_no_key_follows_no_redirect_and_echoes_no_body(teacher):
    teacher.always("今天", Fault.SAFETY_ZHIPUAI)
    chosen = OpenAICompatibleTeacher(teacher.base_url, "m", "sk-server-secret", 5.0, request_chosen=True)
    try:
        with pytest.raises(TeacherError) as info:
            await chosen.complete([{"role": "user", "content": "今天好累啊"}], temperature=0.5, max_tokens=8)
    finally:
        await chosen.aclose()
    assert info.value.reason == "content_safety" and info.value.message == "HTTP 400"
    assert ZHIPUAI_SAFETY_MESSAGE not in str(info.value)
    assert [c.authorization for c in teacher.calls] == [""]


async def test_a_name_that_later_resolves_to_loopback_is_not_connected_to(teacher, monkeypatch):
    """DNS rebinding: the check at submission saw a public address; the connection resolves again."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: real(
        "127.0.0.1" if host == PUBLIC_LOOKING else host, port, *a, **k))
    port = teacher.base_url.split(":")[2].split("/")[0]
    chosen = OpenAICompatibleTeacher(f"http://{PUBLIC_LOOKING}:{port}/v1", "m", None, 5.0, request_chosen=True)
    try:
        with pytest.raises(TeacherError) as info:
            await chosen.complete([{"role": "user", "content": "hi"}], temperature=0.5, max_tokens=8)
    finally:
        await chosen.aclose()
    assert info.value.reason == "connection" and "loopback" in info.value.message
    assert teacher.calls == []
    with pytest.raises(InvalidInput):
        check_request_url(f"http://{PUBLIC_LOOKING}:{port}/v1")


def test_a_spec_stored_before_named_teachers_runs_on_the_operators_teacher(settings, teacher, monkeypatch):
    """A job stored with its own URL and key variable resumes on the named teacher of its provider."""
    monkeypatch.setenv("HOME", "/home/secret-home-value")
    spec = GenerationSpec.model_validate({
        "styles_yaml": "styles:\n  - name: x\n    system_prompt: y\n", "output_prefix": "datasets/old",
        "questions": {"questions": ["hi"]},
        "teacher": {"provider": "openai", "base_url": teacher.base_url, "model": "x", "api_key_env": "HOME",
                    "max_concurrency": 1, "timeout_seconds": 5, "max_retries": 0, "max_tokens": 8}})
    assert spec.teacher.name == "default"
    provider, url, key = teacher_access(spec.teacher, settings)
    assert (provider, url, key) == ("openai", settings.datagen_teacher_base_url, None)
