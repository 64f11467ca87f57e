"""The offline default teacher, for real: datagen -> emotune's gateway -> inference (SmolLM2-135M base model on
CPU), each a process started by the embedded-default supervisor, the job naming no teacher at all."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.json_format import ParseDict

from emotune.data.records import parse_records
from emotune.jobs.store import JobState, JobStore
from emotune.local.supervisor import LocalService, LocalStack, free_port_offset
from emotune.store.artifacts import read_file
from emotune.store.local import LocalStore
from emotune.v1 import datagen_pb2, datagen_pb2_grpc

BASE_MODEL = "smollm2-135m"  # fast, English: the style and questions are English
STYLES_YAML = """\
styles:
  - name: pirate
    language: en
    system_prompt: You are a cheerful pirate. Answer in one short sentence, like a pirate.
    few_shot:
      - {user: "How are you today?", assistant: "Arr, fit as a fiddle and ready to sail, matey!"}
"""


class TeacherStack(LocalStack):
    """inference + gateway (the teacher) + datagen, wired by the supervisor's environment."""

    def services(self) -> list[LocalService]:
        return [s for s in super().services() if s.name in ("inference", "gateway", "datagen")]




@pytest.mark.slow
def test_job_without_a_teacher_uses_the_local_gateway(tmp_path):
    stack = TeacherStack(tmp_path, base_model=BASE_MODEL, port_offset=free_port_offset(), with_ui=False,
                         teacher_model=BASE_MODEL, judge=False,
                         extra_env={"EMOTUNE_LOG_LEVEL": "WARNING", "EMOTUNE_INFERENCE_MAX_CONCURRENCY": "2"})
    try:
        stack.start()
        spec = {"styles_yaml": STYLES_YAML, "questions": {"questions": ["Where is the treasure?"]},
                "teacher": {"max_tokens": 12, "timeout_seconds": 120}}
        with grpc.insecure_channel(f"127.0.0.1:{stack.port(50051)}") as channel:
            ref = datagen_pb2_grpc.DatagenStub(channel).StartGeneration(
                ParseDict(spec, datagen_pb2.GenerationSpec()), timeout=30)
        store = LocalStore(tmp_path / "store")
        deadline = time.monotonic() + 300
        while not (job := JobStore(store).get(ref.job_id)).state.terminal:
            assert time.monotonic() < deadline, "generation through the local gateway did not finish"
            time.sleep(0.5)
    finally:
        stack.stop(grace=10)
    assert job.state == JobState.SUCCEEDED, job.error
    teacher = job.spec["teacher"]
    assert teacher["base_url"] == f"{stack.gateway_url}/v1" and teacher["model"] == BASE_MODEL
    assert teacher["name"] == "default" and "api_key_env" not in teacher  # the operator's teacher, keyed by name
    assert stack.api_key not in str(job.spec)
    records, _ = parse_records(read_file(store, job.result["dataset_artifact"], "records.jsonl").decode(), strict=True)
    assert job.result["records"] == len(records) == 1
    record = records[0]
    assert record.provenance.model == BASE_MODEL and record.assistant_text.strip()
    assert [m.role for m in record.messages] == ["system", "user", "assistant"]
    assert record.provenance.raw_response.strip()
