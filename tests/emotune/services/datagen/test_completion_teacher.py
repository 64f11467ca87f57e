"""The OpenAI-compatible teacher's ``completion`` prompt format: the few-shot written as one chat-log document
and continued on ``/v1/completions`` of the real gateway + inference (SmolLM2 on llama.cpp), as a base-model
teacher is best asked."""

from __future__ import annotations

import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from emotune.errors import InvalidInput
from emotune.services.datagen.config import DatagenSettings, TeacherProfile
from emotune.services.datagen.spec import prepare_spec
from emotune.services.datagen.teachers import OpenAICompatibleTeacher, chat_log_document
from tests.emotune.services.datagen.conftest import STYLES_YAML
from tests.emotune.services.gateway.conftest import API_KEYS, start_gateway
from tests.emotune.services.inference.stack import MODEL, start_inference

FEW_SHOT = [
    {"role": "system", "content": "You are a cheerful friend who answers in one short, upbeat sentence."},
    {"role": "user", "content": "I failed my driving test."},
    {"role": "assistant", "content": "Oh no, but next time you'll ace it, I just know it!"},
    {"role": "user", "content": "It is raining all week."},
]


def test_the_few_shot_becomes_a_chat_log_ending_with_the_reply_label():
    document, stop = chat_log_document([
        {"role": "system", "content": "你是一个温柔体贴的朋友"}, {"role": "user", "content": "今天好累啊"},
        {"role": "assistant", "content": "辛苦啦~"}, {"role": "user", "content": "周一又要上班了"}])
    assert document == ("你是一个温柔体贴的朋友\n\n以下是我和朋友的聊天记录，我的每句话都是上面说的风格。\n\n"
                        "朋友：今天好累啊\n我：辛苦啦~\n朋友：周一又要上班了\n我：")
    assert stop == "\n朋友："
    english, stop = chat_log_document(FEW_SHOT)
    assert english.endswith("Friend: It is raining all week.\nMe:") and stop == "\nFriend:"


def test_the_prompt_format_is_part_of_the_spec():
    settings = DatagenSettings(datagen_teacher_prompt_format="completion", datagen_teacher_model="base", datagen_teachers={
        "api": TeacherProfile(base_url="https://api.example.com/v1", model="m")})
    request = {"styles_yaml": STYLES_YAML, "questions": {"questions": ["hi"]}}
    assert prepare_spec(request, settings, "datasets/a").teacher.prompt_format == "completion"
    other = {**request, "teacher": {"name": "api"}}
    assert prepare_spec(other, settings, "datasets/a").teacher.prompt_format == "chat"  # default elsewhere
    with pytest.raises(InvalidInput) as info:
        prepare_spec({**request, "teacher": {"provider": "zhipuai", "model": "glm-4", "prompt_format": "completion"}},
                     settings, "datasets/a")
    assert info.value.details["field"] == "teacher.prompt_format"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory):
    inference = await start_inference(tmp_path_factory.mktemp("inference"))
    running = await start_gateway(inference.address)
    yield running
    await running.stop()
    await inference.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_a_completion_teacher_continues_the_document_on_the_real_gateway(gateway):
    teacher = OpenAICompatibleTeacher(f"{gateway.url}/v1", MODEL, API_KEYS[0], timeout=60,
                                      prompt_format="completion")
    try:
        reply = await teacher.complete(FEW_SHOT, temperature=0, max_tokens=40, stop=["\n\n"])
    finally:
        await teacher.aclose()
    assert reply.text.strip() and "\nFriend:" not in reply.text and "\n\n" not in reply.text
    assert reply.finish_reason in ("stop", "length") and reply.response_id.startswith("cmpl-")
    assert reply.usage["prompt_tokens"] > 40 and reply.model == MODEL
    metrics = generate_latest().decode()  # this process's registry: what the gateway's metrics port serves
    assert 'route="/v1/completions",status="200"' in metrics
