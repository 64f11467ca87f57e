"""Fixtures for the datagen tests: a real teacher server on loopback, fast retry settings, small styles."""

from __future__ import annotations

import pytest

from emotune.services.datagen.config import DatagenSettings, TeacherProfile
from emotune.services.datagen.service import DatagenService
from emotune.store.local import LocalStore
from tests.support.teacher_server import TeacherServer

STYLES_YAML = """\
styles:
  - name: 温柔
    system_prompt: 你是一个温柔体贴的聊天助手
    few_shot:
      - user: 今天好累啊
        assistant: 辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸
    reference_texts: [辛苦啦~ 要给自己泡杯热茶放松一下吗？🌸]
    temperature: 0.3
  - name: 毒舌
    system_prompt: 你是一个喜欢用犀利吐槽表达关心的朋友
    temperature: 0.7
"""

BLESSINGS_YAML = """\
styles:
  - name: 小红书
    system_prompt: 你是送祝福大师，写小红书风格的一行祝福
    reference_texts: [愿所念之人平安喜乐，愿所想之事顺心如意！, 前方荣光万丈，身后温暖一方。]
    one_line: true
    length: {min: 5, max: 50}
  - name: 严肃
    system_prompt: 你是送祝福大师，写商务严肃风格的祝福
    one_line: true
combinatorial:
  recipients:
    - {name: 妈妈, mention: 我妈}
    - {name: 领导}
  scenes:
    - {name: 春节, description: 新年}
    - {name: 生日}
  exclude:
    - {recipients: [领导], styles: [小红书], reason: 对领导不用网络流行文体}
  extra_instructions: ["", 回答中可以不出现对象称谓]
"""


@pytest.fixture
def teacher():
    with TeacherServer(retry_after=0.05) as server:
        yield server


@pytest.fixture
def settings(tmp_path) -> DatagenSettings:
    return DatagenSettings(
        store_path=tmp_path / "store", datagen_backoff_initial_seconds=0.01, datagen_backoff_max_seconds=0.5,
        datagen_flush_seconds=0.2, datagen_progress_seconds=0.1, datagen_shard_size=4, datagen_max_retries=4,
        datagen_timeout_seconds=5.0,
    )


@pytest.fixture
def service(settings) -> DatagenService:
    return DatagenService(settings, LocalStore(settings.store_path))


TEST_TEACHER = "test-teacher"


def name_test_teacher(settings: DatagenSettings, teacher: TeacherServer, **profile) -> None:
    """Define the operator's teacher "test-teacher" (the test server, OpenAI wire format) in ``settings``: a job
    reaches a loopback endpoint only through a teacher the operator named."""
    settings.datagen_teachers[TEST_TEACHER] = TeacherProfile(base_url=teacher.base_url, model="teacher-test",
                                                             **profile)


@pytest.fixture
def teacher_cfg(teacher, settings) -> dict:
    """The ``teacher`` part of a job spec picking the test server by name."""
    name_test_teacher(settings, teacher)
    return {"name": TEST_TEACHER, "model": "teacher-test"}


@pytest.fixture
def styles_yaml() -> str:
    return STYLES_YAML


@pytest.fixture
def blessings_yaml() -> str:
    return BLESSINGS_YAML
