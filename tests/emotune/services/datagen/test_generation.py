"""Whole generation jobs in-process (DatagenService + JobRunner + real store + real teacher server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from emotune.data.records import parse_records
from emotune.errors import AlreadyExists, FailedPrecondition, InvalidInput
from emotune.jobs.store import JobState
from emotune.services.datagen.config import DatagenSettings, TeacherProfile
from emotune.services.datagen.service import DatagenService
from emotune.services.datagen.shards import read_shards
from emotune.store.artifacts import read_file, read_manifest
from emotune.store.local import LocalStore
from tests.emotune.services.datagen.conftest import name_test_teacher
from tests.support.teacher_server import Fault

QUESTIONS = [f"第{i}个问题：最近怎么样" for i in range(12)]
EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "questions"


async def _finish(service: DatagenService, job_id: str):
    await asyncio.wait_for(service.runner.wait(job_id), timeout=60)
    return service.jobs.get(job_id)


def _dataset(service: DatagenService, prefix: str):
    records, _ = parse_records(read_file(service.store, prefix, "records.jsonl").decode(), strict=True)
    failures = [json.loads(line) for line in read_file(service.store, prefix, "failures.jsonl").decode().splitlines()]
    stats = json.loads(read_file(service.store, prefix, "stats.json"))
    return records, failures, stats


async def test_every_request_ends_as_a_sample_or_a_classified_failure(service, teacher, teacher_cfg, styles_yaml):
    teacher.hang_seconds = 5.0  # longer than the job's request timeout below
    teacher.script("第1个", Fault.RATE_LIMIT, Fault.RATE_LIMIT)
    teacher.script("第2个", Fault.SERVER_ERROR, Fault.UNAVAILABLE)
    teacher.script("第3个", Fault.TIMEOUT)
    teacher.script("第4个", Fault.MALFORMED, Fault.NO_CHOICES, Fault.EMPTY)
    teacher.always("第5个", Fault.SAFETY_ZHIPUAI)
    teacher.always("第6个", Fault.SAFETY_DASHSCOPE_NATIVE)
    teacher.always("第7个", Fault.SERVER_ERROR)  # never recovers: runs out of retries
    teacher.always("第8个", Fault.CONTENT_FILTER)
    teacher.chaos(0.25, [Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.MALFORMED], seed=3)
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {**teacher_cfg, "timeout_seconds": 2.0}})  # loaded CI needs slack
    job = await _finish(service, record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    records, failures, stats = _dataset(service, job.result["dataset_artifact"])
    assert len(records) + len(failures) == stats["planned"] == 24
    assert {r.id for r in records}.isdisjoint(f["id"] for f in failures)
    by_question = {(f["style"], f["prompt"][:3]): f for f in failures}
    for style in ("温柔", "毒舌"):
        assert by_question[(style, "第5个")]["reason"] == "content_safety"
        assert by_question[(style, "第5个")]["code"] == "1301" and by_question[(style, "第5个")]["attempts"] == 1
        assert by_question[(style, "第6个")]["reason"] == "content_safety"
        assert by_question[(style, "第8个")]["reason"] == "content_safety"
        exhausted = by_question[(style, "第7个")]
        assert (exhausted["reason"], exhausted["kind"], exhausted["attempts"]) == ("server_error", "exhausted", 5)
    assert len(failures) == 8
    assert stats["failure_reasons"] == {"content_safety": 6, "server_error": 2}
    recovered = {r.first_user_text[:3]: r for r in records if r.style == "温柔"}
    assert recovered["第1个"].provenance.model_extra["retry_reasons"] == ["rate_limited", "rate_limited"]
    assert recovered["第3个"].provenance.model_extra["retry_reasons"][0] == "timeout"
    assert recovered["第4个"].provenance.model_extra["attempts"] >= 4
    assert stats["retries"]["rate_limited"] >= 4
    # full provenance on every record
    sample = records[0]
    assert sample.provenance.teacher == "openai" and sample.provenance.model == "teacher-test"
    assert sample.provenance.temperature == 0.3 and sample.provenance.prompt_version.startswith("datagen-v1-")
    assert sample.provenance.raw_response and sample.messages[0].content == "你是一个温柔体贴的聊天助手"
    events = service.jobs.events(record.job_id)
    progress = [e for e in events if e.type == "progress"]
    assert progress[-1].data["done"] == 24 and progress[-1].data["per_style"]["温柔"]["failed"] == 4
    assert events[-1].data["state"] == "succeeded"


async def test_shards_are_written_as_results_arrive(service, teacher, teacher_cfg, styles_yaml):
    teacher.latency = 0.05
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {**teacher_cfg, "max_concurrency": 2}})
    prefix = f"datasets/{record.job_id}/shards/"
    seen: list[int] = []
    while not service.jobs.get(record.job_id).state.terminal:
        seen.append(sum(1 for _ in service.store.list(prefix)))
        await asyncio.sleep(0.05)
    assert any(0 < n < 6 for n in seen), seen  # shards appeared while the job was still running
    outcomes, next_index = read_shards(service.store, prefix.rstrip("/"))
    assert len(outcomes) == 24 and next_index == 6  # shard_size 4: six full shards, no rewrites


async def test_multi_turn_dialogues(service, teacher, teacher_cfg, styles_yaml):
    def dialogue(body):
        task = body["messages"][-1]["content"]
        opening = task.split("「")[1].split("」")[0]
        return json.dumps([{"role": "user", "content": opening}, {"role": "assistant", "content": "“好呀~”"},
                           {"role": "user", "content": "那明天呢"}, {"role": "assistant", "content": "明天也行呀"}],
                          ensure_ascii=False)

    teacher.responder = dialogue
    record = await service.start({"styles_yaml": styles_yaml, "mode": "multi", "style_names": ["温柔"],
                                  "questions": {"questions": ["周末一起去爬山吗"]}, "teacher": teacher_cfg})
    job = await _finish(service, record.job_id)
    records, failures, stats = _dataset(service, job.result["dataset_artifact"])
    assert not failures and len(records) == 1
    assert [m.role for m in records[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert records[0].messages[1].content == "周末一起去爬山吗"
    assert records[0].messages[2].content == "好呀~"  # wrapping quotes stripped from assistant turns
    assert stats["postprocess"] == {"strip_wrapping_quotes": 1}


async def test_combinatorial_job(service, teacher, teacher_cfg, blessings_yaml):
    teacher.responder = lambda body: "好的，以下是祝福：\n“岁岁平安，万事胜意🎉”\n这条祝福简洁大方。"
    record = await service.start({"styles_yaml": blessings_yaml, "mode": "combinatorial", "seed": 5,
                                  "teacher": teacher_cfg})
    job = await _finish(service, record.job_id)
    records, _, stats = _dataset(service, job.result["dataset_artifact"])
    assert len(records) == 6 and stats["skipped"] == 2
    assert stats["per_style"]["小红书"]["skipped"] == {"incompatible": 2}
    assert {r.assistant_text for r in records} == {"岁岁平安，万事胜意🎉"}
    assert stats["postprocess"] == {"cut_lead_in": 6, "first_paragraph": 6, "strip_wrapping_quotes": 6}
    assert not any("领导" in c.prompt_text and "小红书" in c.prompt_text for c in teacher.calls)


async def test_zhipuai_teacher_with_its_concurrency_cap(settings, teacher, styles_yaml):
    with_key = settings.model_copy(update={"zhipuai_api_key": SecretStr("abc.zhipu-secret")})
    service = DatagenService(with_key, LocalStore(settings.store_path))
    teacher.latency = 0.2
    teacher.script("第2个", Fault.RATE_LIMIT)
    teacher.always("第3个", Fault.SAFETY_ZHIPUAI)
    with_key.datagen_teachers["zhipuai-test"] = TeacherProfile(provider="zhipuai", base_url=teacher.zhipuai_base_url,
                                                               model="glm-4-flash")
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {"name": "zhipuai-test", "max_concurrency": 50}})
    job = await _finish(service, record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.spec["teacher"]["max_concurrency"] == 5  # the provider cap wins over the job's wish
    assert teacher.max_in_flight == 5
    assert {c.flavour for c in teacher.calls} == {"zhipuai"}
    assert {c.authorization for c in teacher.calls} == {"Bearer abc.zhipu-secret"}
    records, failures, _ = _dataset(service, job.result["dataset_artifact"])
    assert len(records) == 22 and {f["reason"] for f in failures} == {"content_safety"}
    assert records[0].provenance.teacher == "zhipuai"


async def test_bad_key_fails_the_job_and_keeps_partial_results(service, teacher, teacher_cfg, styles_yaml):
    teacher.always("第9个", Fault.AUTH)
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {**teacher_cfg, "max_concurrency": 1}})
    job = await _finish(service, record.job_id)
    assert job.state == JobState.FAILED and "auth" in job.error and teacher.base_url in job.error
    outcomes, _ = read_shards(service.store, f"datasets/{record.job_id}/shards")
    assert len(outcomes) == 9  # the work done before the refusal is kept for a resume
    # fix the "key" and continue the failed job: only the missing samples are requested
    teacher.reset()
    resumed = await service.start({}, resume_job_id=record.job_id)
    job = await _finish(service, resumed.job_id)
    assert job.state == JobState.SUCCEEDED and job.result["records"] == 24
    assert len(teacher.calls) == 24 - 9
    assert job.result["dataset_artifact"] == f"datasets/{record.job_id}"


async def test_cancel_then_resume(service, teacher, teacher_cfg, styles_yaml):
    teacher.latency = 0.1
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {**teacher_cfg, "max_concurrency": 2}})
    while len(teacher.calls) < 6:
        await asyncio.sleep(0.02)
    await service.runner.cancel(record.job_id)
    job = await _finish(service, record.job_id)
    assert job.state == JobState.CANCELLED
    done_before, _ = read_shards(service.store, f"datasets/{record.job_id}/shards")
    assert 0 < len(done_before) < 24
    asked_before = len(teacher.calls)
    resumed = await service.start({}, resume_job_id=record.job_id)
    job = await _finish(service, resumed.job_id)
    assert job.state == JobState.SUCCEEDED and job.result["records"] == 24
    # requests that finished and were written are never asked again
    repeated = [c for c in teacher.calls[asked_before:] if any(c.last_user == o.record.first_user_text and
                c.messages[0]["content"].startswith(o.record.messages[0].content) for o in done_before.values())]
    assert not repeated
    assert read_manifest(service.store, job.result["dataset_artifact"]).metadata["records"] == 24


async def test_submission_errors_name_the_field(service, teacher_cfg, styles_yaml, blessings_yaml, monkeypatch):
    base = {"styles_yaml": styles_yaml, "questions": {"questions": ["你好"]}, "teacher": teacher_cfg}
    cases = [
        ({**base, "style_names": ["傲娇"]}, "style_names[0]"),
        ({**base, "mode": "dialogue"}, "mode"),
        ({**base, "questions": {}}, "questions"),
        ({**base, "teacher": {**teacher_cfg, "base_url": "ftp://x"}}, "teacher.base_url"),
        ({**base, "variants_per_question": 1000}, "variants_per_question"),
        ({**base, "questions": {"artifact_key": "inputs/missing.txt"}}, "questions.artifact_key"),
        ({**base, "mode": "combinatorial"}, "combinatorial"),
    ]
    for request, field in cases:
        with pytest.raises(Exception) as info:
            await service.start(request)
        assert getattr(info.value, "details", {}).get("field") == field, (field, info.value)
    with pytest.raises(InvalidInput) as info:
        await service.start({**base, "styles_yaml": "styles:\n  - name: x\n    system_prompt: y\n    temperature: 9\n"})
    assert info.value.file == "spec.styles_yaml" and info.value.line == 4
    assert info.value.field == "styles[0].temperature"
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    service.settings.datagen_teachers["deepseek"] = TeacherProfile(
        base_url="https://api.deepseek.com/v1", model="deepseek-chat", api_key_env="DEEPSEEK_API_KEY")
    with pytest.raises(FailedPrecondition, match="DEEPSEEK_API_KEY"):
        await service.start({**base, "teacher": {"name": "deepseek"}})
    with pytest.raises(FailedPrecondition, match="ZHIPUAI_API_KEY"):
        await service.start({**base, "teacher": {"provider": "zhipuai", "model": "glm-4"}})


async def test_output_prefix_is_never_overwritten(service, teacher, teacher_cfg, styles_yaml):
    request = {"styles_yaml": styles_yaml, "questions": {"questions": ["你好"]}, "teacher": teacher_cfg,
               "output_prefix": "datasets/mine"}
    job = await _finish(service, (await service.start(request)).job_id)
    assert job.result["dataset_artifact"] == "datasets/mine"
    with pytest.raises(AlreadyExists):
        await service.start(request)


async def test_questions_from_a_store_file(service, teacher, teacher_cfg, styles_yaml):
    lines = "今天好累\n\n今天好累\n下雨了没带伞\n"
    service.store.put_text("inputs/q/daily.txt", lines)
    record = await service.start({"styles_yaml": styles_yaml, "style_names": ["毒舌"], "teacher": teacher_cfg,
                                  "questions": {"artifact_key": "inputs/q/daily.txt", "format": "lines"}})
    job = await _finish(service, record.job_id)
    records, _, _ = _dataset(service, job.result["dataset_artifact"])
    assert [r.first_user_text for r in records] == ["今天好累", "下雨了没带伞"]
    assert all(r.provenance.source.endswith(":inputs/q/daily.txt") for r in records)


async def test_multi_turn_from_a_wechat_export_folder(service, teacher, teacher_cfg, styles_yaml):
    """A folder export goes into the store as a prefix; its dialogues are the openings for multi-turn mode."""
    from emotune.services.datagen.cli import upload_questions

    key = upload_questions(service.store, EXAMPLES / "wechat_export")
    teacher.responder = lambda body: json.dumps(
        [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在呢~"}], ensure_ascii=False)
    record = await service.start({"styles_yaml": styles_yaml, "mode": "multi", "style_names": ["温柔"],
                                  "questions": {"artifact_key": key, "format": "wechat"}, "teacher": teacher_cfg})
    job = await _finish(service, record.job_id)
    records, failures, _ = _dataset(service, job.result["dataset_artifact"])
    assert len(records) == 9 and not failures  # the export holds 9 dialogues
    fragments = [r.meta["fragment"] for r in records]
    assert fragments[0][0] == {"role": "user", "content": "吃饭了没"}
    assert any("吃饭了没" in c.prompt_text for c in teacher.calls)  # the fragment is in the prompt


async def test_graceful_shutdown_keeps_the_job_for_the_next_process(settings, service, teacher, teacher_cfg,
                                                                    styles_yaml):
    """SIGTERM path: the runner stops, buffered results are flushed, the job stays 'running' for a restart."""
    teacher.latency = 0.1
    record = await service.start({"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
                                  "teacher": {**teacher_cfg, "max_concurrency": 3}})
    while len(teacher.calls) < 7:
        await asyncio.sleep(0.02)
    await service.shutdown()
    assert service.jobs.get(record.job_id).state == JobState.RUNNING
    flushed, _ = read_shards(service.store, f"datasets/{record.job_id}/shards")
    answered = {c.last_user + c.messages[0]["content"] for c in teacher.calls if c.finished}
    assert len(flushed) >= len(answered) - 3  # at most the in-flight ones were lost, nothing finished was
    asked_before = len(teacher.calls)

    restarted = DatagenService(settings, LocalStore(settings.store_path))
    assert await restarted.resume_unfinished() == [record.job_id]
    job = await _finish(restarted, record.job_id)
    assert job.state == JobState.SUCCEEDED and job.result["records"] == 24
    again = {c.last_user + c.messages[0]["content"] for c in teacher.calls[asked_before:]}
    done = {o.record.first_user_text + o.record.messages[0].content for o in flushed.values()}
    assert not (again & done)
    # The restarted process is the job's second owner: it wrote under its own generation's keys (issue 29), so a
    # late write of the first owner could not have landed on them, and it left the first owner's shards as they were.
    prefix = f"datasets/{record.job_id}"
    assert job.result["dataset_artifact"] == f"{prefix}/g2"
    assert read_shards(restarted.store, f"{prefix}/shards")[0] == flushed
    records, _, _ = _dataset(restarted, f"{prefix}/g2")
    assert len(records) == 24 and {o.id for o in flushed.values()} <= {r.id for r in records}


async def test_stop_strings_end_single_replies_but_not_dialogues(tmp_path, teacher, teacher_cfg, styles_yaml,
                                                               monkeypatch):
    """The embedded default asks its base-model teacher for one paragraph (``["\\n"]``); dialogue JSON spans lines."""
    monkeypatch.setenv("EMOTUNE_DATAGEN_TEACHER_STOP", '["\\n"]')
    settings = DatagenSettings(store_path=tmp_path / "store", datagen_flush_seconds=0.2, datagen_timeout_seconds=5.0)
    assert settings.datagen_teacher_stop == ["\n"]
    name_test_teacher(settings, teacher)
    service = DatagenService(settings, LocalStore(settings.store_path))
    sent_stops = []

    def reply(body):
        sent_stops.append(body.get("stop"))
        if "「" in body["messages"][-1]["content"]:
            return json.dumps([{"role": "user", "content": "周末一起去爬山吗"}, {"role": "assistant", "content": "好呀~"}],
                              ensure_ascii=False, indent=1)
        return "辛苦啦~ 先歇一会儿吧 🌸\n下面是更多我不该说的话……"

    teacher.responder = reply
    single = await service.start({"styles_yaml": styles_yaml, "style_names": ["温柔"],
                                  "questions": {"questions": ["今天好累啊"]}, "teacher": teacher_cfg})
    records, failures, _ = _dataset(service, (await _finish(service, single.job_id)).result["dataset_artifact"])
    assert not failures and records[0].messages[-1].content == "辛苦啦~ 先歇一会儿吧 🌸"
    dialogue = await service.start({"styles_yaml": styles_yaml, "mode": "multi", "style_names": ["温柔"],
                                    "questions": {"questions": ["周末一起去爬山吗"]}, "teacher": teacher_cfg})
    records, failures, _ = _dataset(service, (await _finish(service, dialogue.job_id)).result["dataset_artifact"])
    assert not failures and [m.content for m in records[0].messages[1:]] == ["周末一起去爬山吗", "好呀~"]
    assert sent_stops == [["\n"], None]


def _voice_samples(service: DatagenService) -> str:
    """A voice job's training samples as the pipeline publishes them: the trigger, the context, the reply."""
    from emotune.data.records import Message, Record, dumps_records
    from emotune.store.artifacts import publish_artifact

    def sample(index: int, *turns: tuple[str, str]) -> Record:
        return Record(id=f"voice-{index:05d}", style="voice", meta={"session": index},
                      messages=[Message(role="system", content="像我平时聊天那样回复。"),
                                *(Message(role=role, content=text) for role, text in turns)])

    samples = [sample(0, ("user", "那就这么定了"), ("assistant", "好嘞 冲鸭")),
               sample(1, ("assistant", "救命 我又迟到了"), ("user", "哈哈哈哈"), ("assistant", "别笑了 绝了")),
               sample(2, ("user", "几点到"), ("assistant", "马上马上～"))]
    publish_artifact(service.store, "datasets/export-voice-0",
                     {"records.jsonl": dumps_records(samples).encode()}, {"kind": "dataset", "voice": True})
    return "datasets/export-voice-0"


async def test_context_mode_writes_only_the_other_sides_opening(service, teacher, teacher_cfg):
    """Seed 003's step for a voice job: the teacher adds what the other side said before a fragment; every word of
    the sample stays as it was, and a sample the teacher writes no good opening for is published unchanged."""
    from emotune.voice.job import probe_styles_yaml

    def opening(body):
        task = body["messages"][-1]["content"]
        if "几点到" in task:
            return '["几点到"]'  # repeats the fragment: refused every time
        return '["周六去不去爬山？"]' if "那就这么定了" in task else '```json\n["你人呢", "都等你半小时了"]\n```'

    teacher.responder = opening
    record = await service.start({"styles_yaml": probe_styles_yaml(["好嘞"], "像我平时聊天那样回复。"),
                                  "style_names": ["voice"], "mode": "context",
                                  "samples_artifact": _voice_samples(service),
                                  "teacher": {**teacher_cfg, "max_retries": 1}})
    job = await _finish(service, record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    records, failures, stats = _dataset(service, job.result["dataset_artifact"])
    by_source = {r.meta.get("source_record", r.id): r for r in records}
    assert len(records) == 3 and [f["reason"] for f in failures] == ["malformed_output"]
    assert "repeats the fragment" in failures[0]["message"]
    assert [(m.role, m.content) for m in by_source["voice-00000"].messages] == [
        ("system", "像我平时聊天那样回复。"), ("user", "周六去不去爬山？\n那就这么定了"), ("assistant", "好嘞 冲鸭")]
    assert [(m.role, m.content) for m in by_source["voice-00001"].messages] == [
        ("system", "像我平时聊天那样回复。"), ("user", "你人呢\n都等你半小时了"), ("assistant", "救命 我又迟到了"),
        ("user", "哈哈哈哈"), ("assistant", "别笑了 绝了")]
    assert by_source["voice-00002"].messages[1].content == "几点到"  # kept as it was
    assert by_source["voice-00001"].meta == {"session": 1, "source_record": "voice-00001", "mode": "context",
                                             "variant": 0}
    prompt = next(c.prompt_text for c in teacher.calls if "救命" in c.prompt_text)
    assert "我：救命 我又迟到了\n对方：哈哈哈哈\n我：别笑了 绝了" in prompt and "像我平时聊天" not in prompt
    assert stats["failure_reasons"] == {"malformed_output": 1}


async def test_context_mode_needs_the_samples(service, teacher_cfg, styles_yaml):
    with pytest.raises(InvalidInput) as error:
        await service.start({"styles_yaml": styles_yaml, "mode": "context", "teacher": teacher_cfg})
    assert error.value.details["field"] == "samples_artifact"
