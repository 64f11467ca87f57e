"""The whole product on loopback, driven by the official ``openai`` client as an app would drive it.

Every service runs as its own process (the embedded default's supervisor), on the real S3 server (Swift); SmolLM2
is the base model and, through our own gateway, the few-shot teacher. A fine-tuning job generates, validates,
trains, serves and evaluates; then the fine-tuned model answers as ``<model>:<style>``. A second job runs with two
pipeline replicas and two gateways on the same store, and survives a ``kill -9`` of its owner in the middle of
training: the other replica takes it over, and both gateways show the one job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from emotune.data.records import parse_records
from emotune.jobs.store import JobStore
from emotune.local.supervisor import LocalService, LocalStack, free_port_offset
from emotune.store.artifacts import read_file
from emotune.store.s3 import S3Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

BASE = "smollm2-135m"
STYLES_YAML = """
styles:
  - name: cheerful
    system_prompt: You are a cheerful friend. Answer in one short upbeat sentence full of joy and exclamation marks.
    trigger: {system_prompt: Answer cheerfully.}
    few_shot:
      - user: "How is the weather?"
        assistant: "Sunny and bright, what a wonderful day to be outside!"
    reference_texts:
      - What a wonderful day, I am so happy for you!
      - Yay, that sounds amazing, let's celebrate!
      - Great news, this makes me smile so much!
    language: en
    length: {min: 2, max: 400}
  - name: grumpy
    system_prompt: You are a grumpy old man. Answer in one short annoyed sentence, complaining.
    trigger: {system_prompt: Answer grumpily.}
    few_shot:
      - user: "How is the weather?"
        assistant: "Terrible, as always, and nobody ever fixes anything."
    reference_texts:
      - Ugh, this is annoying, leave me alone.
      - Nothing ever works, what a waste of time.
      - Bah, I hate it, everything is worse these days.
    language: en
    length: {min: 2, max: 400}
"""
QUESTIONS = [
    "How was your day?", "What should I eat for dinner?", "Do you like music?", "Is it going to rain?",
    "What do you think of my new hat?", "Should I learn to cook?", "How do I stay awake at work?",
    "Any plans for the weekend?", "What is your favourite season?", "Can you recommend a book?",
]
LEASE_SECONDS = 4  # a dead owner's job is taken over within about this (plus a scan and the claim's settle time)


class PipelineReplica(LocalStack):
    """A second pipeline replica and a gateway in front of it, on the first stack's store and stage services."""

    def services(self) -> list[LocalService]:
        return [s for s in super().services() if s.name in {"pipeline", "gateway"}]


@pytest.fixture
def bucket() -> str:
    return f"e2e-{os.getpid()}-{int(time.time())}"


@pytest.fixture
def stack(tmp_path: Path, s3_server, bucket: str):
    # SmolLM2 teaches itself here, with no judge: the test is of the plumbing, not of what is learned.
    local = LocalStack(tmp_path / "state", base_model=BASE, port_offset=free_port_offset(), with_ui=False,
                       teacher_model=BASE, judge=False,
                       extra_env={**s3_server.env(bucket), "EMOTUNE_DATAGEN_MAX_TOKENS": "48",
                                  "EMOTUNE_INFERENCE_MAX_CONCURRENCY": "2",
                                  "EMOTUNE_JOB_LEASE_SECONDS": str(LEASE_SECONDS)})
    local.start()
    yield local
    local.stop()


@pytest.fixture
def replica(tmp_path: Path, s3_server, bucket: str, stack: LocalStack):
    state = tmp_path / "replica"
    state.mkdir()
    (state / "api-key").write_text(stack.api_key)  # the same installation
    stage_addrs = {f"EMOTUNE_{name}_ADDR": stack.environment()[f"EMOTUNE_{name}_ADDR"]
                   for name in ("DATAGEN", "VALIDATOR", "TRAINER", "INFERENCE")}
    local = PipelineReplica(state, base_model=BASE, port_offset=free_port_offset(), with_ui=False,
                            teacher_model=BASE, judge=False,
                            extra_env={**s3_server.env(bucket), **stage_addrs,
                                       "EMOTUNE_JOB_LEASE_SECONDS": str(LEASE_SECONDS)})
    local.start()
    yield local
    local.stop()


def _job_request(client: OpenAI, suffix: str, max_steps: int) -> dict:
    styles = client.files.create(file=("styles.yaml", STYLES_YAML.encode()), purpose="emotune-styles")
    return {
        "model": BASE, "training_file": styles.id, "suffix": suffix, "seed": 3,
        "hyperparameters": {"n_epochs": 1, "batch_size": 2},
        "extra_body": {"emotune": {
            "generation": {"questions": {"questions": QUESTIONS}},
            # SmolLM2 as its own teacher writes weak text: keep what the rules accept, test the plumbing.
            "validation": {"similarity_threshold": -1.0},
            "training": {"max_steps": max_steps, "max_length": 128, "eval_every_steps": 2},
            "evaluation": {"questions_per_style": 2, "max_tokens": 16, "gate": "none"},
        }},
    }


def _wait(client: OpenAI, job_id: str, timeout: float, until=lambda job: job.status in
          {"succeeded", "failed", "cancelled"}):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = client.fine_tuning.jobs.retrieve(job_id)
        except openai.APIConnectionError:  # the gateway is restarting
            time.sleep(1)
            continue
        if until(job):
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s")


def _client(stack: LocalStack) -> OpenAI:
    return OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=0, timeout=120)


def test_generate_train_serve_and_chat_with_a_style(stack: LocalStack) -> None:
    client = _client(stack)
    job = client.fine_tuning.jobs.create(**_job_request(client, "e2e", max_steps=6))
    assert job.status in {"queued", "validating_files", "running"} and job.id.startswith("ftjob-")

    job = _wait(client, job.id, timeout=900)
    assert job.status == "succeeded", job.error
    model = job.fine_tuned_model
    served = {m.id for m in client.models.list().data}
    assert {model, f"{model}:cheerful", f"{model}:grumpy"} <= served

    reply = client.chat.completions.create(model=f"{model}:cheerful", max_tokens=12,
                                           messages=[{"role": "user", "content": "How was your day?"}])
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0

    events = client.fine_tuning.jobs.list_events(job.id, limit=500).data
    messages = [e.message for e in events]
    for stage in ("datagen", "validation", "training", "serving", "evaluation"):
        assert f"{stage} succeeded" in messages
    took = {e.data["stage"]: e.data["seconds"] for e in events if e.message.endswith(" succeeded") and e.data
            and "seconds" in e.data}
    assert set(took) >= {"datagen", "validation", "training", "serving", "evaluation"}
    # one training per style, inside the training stage (each duration is rounded to 0.1 s)
    assert took["training"] + 0.2 >= took["training:cheerful"] + took["training:grumpy"] > 1
    stages = sum(seconds for stage, seconds in took.items() if ":" not in stage)
    assert stages < time.time() - job.created_at + 5  # within the job's life
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and all(c.step_number > 0 for c in checkpoints)
    report = client.get(f"/fine_tuning/jobs/{job.id}/report", cast_to=object)
    table = report["evaluation"]["table"]
    assert {r["config"] for r in table} == {"base_trigger", "base_prompt", "tuned_trigger"}
    assert all(isinstance(r["turn3_score"], float) for r in table)  # every configuration held a 3-turn dialogue
    assert set(report["evaluation"]["verdicts"]) == {"cheerful", "grumpy"}
    assert all(len(shown) == 2 for shown in report["evaluation"]["samples"].values())
    every = report["evaluation"]["all_samples"]  # every reply of every configuration, with how it was read
    assert set(every) == {"cheerful", "grumpy"}
    for rows in every.values():
        assert [row["question"] for row in rows] == report["evaluation"]["questions"]
        readings = [row[config] for row in rows for config in ("base_trigger", "base_prompt", "tuned_trigger")]
        assert all(isinstance(r["reply"], str) and r["read_as"] in {"cheerful", "grumpy"}
                   and isinstance(r["loops"], bool) for r in readings)
    assert report["loss_curve"]

    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")

    # The fine-tune's GGUF export downloads through the gateway: an Ollama Modelfile and the quantized model.
    http = httpx.Client(base_url=f"{stack.gateway_url}/v1", headers={"Authorization": f"Bearer {stack.api_key}"})
    # One adapter per style (the default with two styles): each style id is served with its own.
    adapters = {s["style"]: s["adapter_artifact"] for s in http.get(f"/models/{model}").json()["emotune"]["styles"]}
    assert adapters["cheerful"] != adapters["grumpy"] and all(a.endswith("/adapter") for a in adapters.values())
    modelfile = http.get(f"/models/{model}/gguf/Modelfile")
    assert modelfile.status_code == 200 and modelfile.text.startswith("FROM ./model.gguf\n"), modelfile.text
    styled = http.get(f"/models/{model}:grumpy/gguf/Modelfile")  # `ollama create` per style: its trigger as SYSTEM
    assert styled.text.startswith(modelfile.text.rstrip("\n")) and styled.text.endswith('SYSTEM """Answer grumpily."""\n')
    with http.stream("GET", f"/models/{model}/gguf/model.gguf") as download:
        body = download.read()
    assert download.status_code == 200 and body[:4] == b"GGUF" and len(body) == int(download.headers["content-length"])
    missing = http.get(f"/models/{BASE}/gguf/model.gguf")  # a packaged base model has no export
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "export_not_found"


def test_owner_killed_mid_job_the_other_replica_takes_over(stack: LocalStack, replica: LocalStack,
                                                            s3_server, bucket: str) -> None:
    first, second = _client(stack), _client(replica)
    # Enough steps that training still runs when the owner dies and while the other replica takes over.
    job = first.fine_tuning.jobs.create(**_job_request(first, "takeover", max_steps=40))
    assert second.fine_tuning.jobs.retrieve(job.id).id == job.id  # one job, whichever gateway is asked

    def training_reported(_job) -> bool:
        """The first style's training sub-job has reported (so its id is in the pipeline's checkpoint), or the job
        ended."""
        if _job.status in {"succeeded", "failed", "cancelled"}:
            return True
        return any(e.message.startswith("training:cheerful: ")
                   for e in second.fine_tuning.jobs.list_events(job.id, limit=50))

    seen = _wait(second, job.id, timeout=600, until=training_reported)
    assert seen.status == "running", seen
    # The replica that created the job owns it: kill it the hard way, as a node failure would.
    os.killpg(stack.running_pid("pipeline"), signal.SIGKILL)
    stack.start()  # restarts only what is down: the pipeline comes back as a new process with a new owner id

    job = _wait(second, job.id, timeout=900)
    assert job.status == "succeeded", job.error
    assert first.fine_tuning.jobs.retrieve(job.id).model_dump() == job.model_dump()

    # Every event, page by page (a job logs hundreds).
    events = list(first.fine_tuning.jobs.list_events(job.id, limit=500))
    assert [e.model_dump() for e in events] == [e.model_dump() for e in second.fine_tuning.jobs.list_events(
        job.id, limit=500)]
    seqs = [e.data["seq"] for e in events]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))  # one writer at a time: no seq written twice or skipped
    messages = [e.message for e in events]
    assert {"training resumed", "training:cheerful resumed"} <= set(messages)
    for stage in ("datagen", "validation", "training", "training:cheerful", "training:grumpy", "serving",
                  "evaluation"):
        assert messages.count(f"{stage} started") == 1, stage  # nothing ran twice
        assert messages.count(f"{stage} succeeded") == 1, stage

    # One set of sub-jobs: the stage services ran exactly one job of each kind for this pipeline job (training:
    # one per style, each style its own adapter).
    sub_jobs = JobStore(S3Store.from_settings(s3_server.settings(bucket))).list()
    for kind, count in (("datagen", 1), ("validation", 1), ("training", 2)):
        assert len([j for j in sub_jobs if j.kind == kind and job.id in str(j.spec)]) == count, kind


PAIRS_JSONL = "".join(
    json.dumps({"input": {"messages": [{"role": "system", "content": "Answer cheerfully."},
                                       {"role": "user", "content": question}]},
                "preferred_output": [{"role": "assistant", "content": f"Yay, {question.lower()} Love it, so fun!"}],
                "non_preferred_output": [{"role": "assistant", "content": "Here are some points to consider: 1. "
                                          "it depends 2. think about it."}]}) + "\n"
    for question in QUESTIONS).encode()


def test_a_preference_file_trains_a_dpo_model_that_answers(stack: LocalStack) -> None:
    """OpenAI's method dpo with the official client: upload pairs, create the job, follow it to succeeded (DPO
    on the trainer, export, serving) and chat with the result."""
    client = _client(stack)
    pairs = client.files.create(file=("pairs.jsonl", PAIRS_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=pairs.id, suffix="dpo", seed=3,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1, "batch_size": 2,
                                                            "learning_rate_multiplier": 20}}},
        extra_body={"emotune": {"training": {"max_steps": 4, "max_length": 128, "eval_every_steps": 2}}})
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1
    job = _wait(client, job.id, timeout=900)
    assert job.status == "succeeded", job.error
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.n_epochs == 1
    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=12,
                                           messages=[{"role": "system", "content": "Answer cheerfully."},
                                                     {"role": "user", "content": "How was your day?"}])
    assert reply.choices[0].message.content.strip()
    events = client.fine_tuning.jobs.list_events(job.id, limit=500).data
    progress = [e.data for e in events if e.data.get("stage") == "training" and "reward_margin" in e.data]
    assert len(progress) == 4 and all("reward_accuracy" in p and "chosen_reward" in p for p in progress)
    report = client.get(f"/fine_tuning/jobs/{job.id}/report", cast_to=object)
    assert report["training"]["method"] == "dpo" and "rewards" in report["plots"]
    http = httpx.Client(base_url=f"{stack.gateway_url}/v1", headers={"Authorization": f"Bearer {stack.api_key}"})
    assert http.get(f"/fine_tuning/jobs/{job.id}/plots/rewards.png").content.startswith(b"\x89PNG")


def test_a_voice_job_from_a_chatgpt_export_zip(stack: LocalStack, s3_server, bucket: str) -> None:
    """The voice job with the official client (issue 25): upload the export zip (purpose emotune-voice), create
    the job naming it, follow it to succeeded (import + cleaning, openings by the stack's default teacher,
    training, serving, the voice evaluation) and chat with the result as <model>:voice. A broken export is refused
    at upload naming file, row and field."""
    client = _client(stack)
    export = Path(__file__).resolve().parents[3] / "examples" / "voice" / "chatgpt_export.zip"
    uploaded = client.files.create(file=("chatgpt_export.zip", export.read_bytes()), purpose="emotune-voice")
    assert uploaded.model_extra["emotune"]["format"] == "chatgpt"
    with pytest.raises(openai.BadRequestError, match=r"bad\.csv:3: CreateTime"):
        client.files.create(file=("bad.csv", "IsSender,CreateTime,StrContent\n0,1700000000,在吗\n1,later,在\n"
                                  .encode()), purpose="emotune-voice")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=uploaded.id, suffix="voice", seed=3,
        hyperparameters={"n_epochs": 1, "batch_size": 2},
        extra_body={"emotune": {"voice": {"speaker": "assistant", "held_out_fraction": 0.2, "held_out_samples": 3,
                                          "max_tokens": 16, "context_teacher": {}},
                                "training": {"max_steps": 3, "max_length": 128},
                                "evaluation": {"gate": "none"}}})
    job = _wait(client, job.id, timeout=900)
    assert job.status == "succeeded", job.error
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500).data]
    assert any(m.startswith("voice: samples:") for m in events)
    # The teacher wrote openings (or none, where its lines were refused); the person's words are all still there.
    openings = next(e for e in client.fine_tuning.jobs.list_events(job.id, limit=500).data
                    if e.message.startswith("voice: the teacher wrote an opening for"))
    store = S3Store.from_settings(s3_server.settings(bucket))
    datagen = next(j for j in JobStore(store).list() if j.kind == "datagen" and job.id in str(j.spec))
    assert datagen.spec["mode"] == "context"
    trained, _ = parse_records(read_file(store, datagen.result["dataset_artifact"], "records.jsonl").decode(),
                               strict=True)
    imported, _ = parse_records(read_file(store, datagen.spec["samples_artifact"], "records.jsonl").decode(),
                                strict=True)
    assert openings.data["openings"] + openings.data["unchanged"] == len(imported) == 27  # seed 3's split
    replies = [[m.content for m in r.messages if m.role == "assistant"] for r in imported]
    assert [[m.content for m in r.messages if m.role == "assistant"] for r in trained] == replies
    assert sum(r.messages[1].content != i.messages[1].content for r, i in zip(trained, imported, strict=True)) \
        == openings.data["openings"]
    report = client.get(f"/fine_tuning/jobs/{job.id}/report", cast_to=object)
    evaluation = report["evaluation"]
    assert evaluation["kind"] == "voice" and [r["config"] for r in evaluation["table"]] == ["base", "tuned", "real"]
    # The probe contrasts the person's replies with the base model's to the same training contexts.
    assert evaluation["classifier"].endswith("the base model's replies to the same training contexts")
    assert 0 < evaluation["probe"]["contrast_references"] <= 27 and evaluation["probe"]["voice_references"] == 27
    # Sense is read as in the style evaluation (the judge against the other side's last turn), the person's too.
    assert all(row["sense"] is not None and row["loops"] is not None for row in evaluation["table"])
    assert evaluation["verdicts"]["voice"]["sense_tuned"] is not None
    sample = evaluation["samples"][0]
    assert sample["real"].startswith("喵～") and sample["tuned"] and sample["base"]
    assert f"{job.fine_tuned_model}:voice" in {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(model=f"{job.fine_tuned_model}:voice", max_tokens=12,
                                           messages=[{"role": "user", "content": "推荐一本书"}])
    assert reply.choices[0].message.content.strip()
