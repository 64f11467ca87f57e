"""Each owner of one training job writes under its own lease generation of the job's ``output_prefix`` (issue 29,
item 5, inside a stage service): when one trainer replica takes a job over from another, an upload the old owner
still has under way cannot land on the new owner's keys, and the job's result names the new owner's.

Two real ``TrainerService`` replicas (A, B; each its own work dir, as two hosts, and its own S3 client) on a real S3
server with conditional writes (moto's, a separate process; ``tests/support/moto_s3.py``), real leases, the real
hf worker training the tiny Llama. A trains; its checkpoint-4 upload fails (the run goes on from its local copy),
so the store holds A's checkpoint-2 only. A loses the job while its export is in its thread (A stops, releasing its
lease; cancelling its task does not stop that thread), and B takes the job over (generation 2), resumes from A's
checkpoint-2 and trains on. A's late export publishes first, then B's. Before: both published under the one
``output_prefix``; A's late report took the key and B's export was refused as "already published with different
content", so the job failed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from emotune.jobs.runner import owner_prefix
from emotune.jobs.store import JobState, JobStore
from emotune.models.chat_template import LMDEPLOY_FILE
from emotune.services.trainer.config import TrainerSettings
from emotune.services.trainer.service import TrainerService
from emotune.store.artifacts import download_artifact, publish_artifact, read_file, read_manifest
from emotune.store.s3 import S3Store
from tests.emotune.jobs.test_job_cas import moto_endpoint, moto_settings  # noqa: F401 (the fixture)
from tests.emotune.services.trainer.conftest import styled_jsonl
from tests.support.takeover import take_over

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
DATASET = "validated/owners/kept"


def _replica(tmp_path: Path, name: str, endpoint: str, bucket: str) -> TrainerService:
    settings = TrainerSettings(trainer_work_dir=tmp_path / name / "work", job_lease_seconds=5)
    return TrainerService(settings, S3Store.from_settings(moto_settings(endpoint, bucket)))


async def test_an_old_owners_late_export_does_not_land_on_the_new_owners_keys(
        tmp_path: Path, tiny_model_dir: Path, moto_endpoint: str) -> None:  # noqa: F811
    bucket = f"emotune-owners-{uuid.uuid4().hex[:12]}"
    a, b = (_replica(tmp_path, name, moto_endpoint, bucket) for name in ("a", "b"))
    store = S3Store.from_settings(moto_settings(moto_endpoint, bucket))
    assert store.conditional_writes
    publish_artifact(store, DATASET, {"records.jsonl": styled_jsonl(30)}, {"kind": "dataset"})

    upload_a = a.upload_checkpoint

    def a_uploads_checkpoint_2_only(owned: Any, path: Path, data: dict, kept: list[str]) -> str:
        if path.name != "checkpoint-2":
            raise OSError("store unreachable")  # tolerated: the run goes on, its local copy allows resuming
        return upload_a(owned, path, data, kept)

    a_exporting, release_a, a_done = threading.Event(), threading.Event(), threading.Event()
    late: dict[str, Any] = {}
    export_a, export_b = a.export_run, b.export_run

    def a_export_held(*args: Any) -> dict:  # in A's export thread, which A's cancellation does not stop
        a_exporting.set()
        release_a.wait(600)
        try:
            late["result"] = export_a(*args)
        except Exception as exc:  # noqa: BLE001 (reported by the assertions below)
            late["error"] = exc
        finally:
            a_done.set()
        return late.get("result", {})

    def b_export_after_a(*args: Any) -> dict:
        release_a.set()  # A's late export publishes first ...
        a_done.wait(600)
        return export_b(*args)  # ... then B's

    a.upload_checkpoint, a.export_run, b.export_run = a_uploads_checkpoint_2_only, a_export_held, b_export_after_a
    jobs = JobStore(store)
    try:
        record = await a.start({"base_model": str(tiny_model_dir), "dataset_artifact": DATASET, "max_steps": 4,
                                "batch_size": 2, "max_length": 128, "eval_every_steps": 2,
                                "keep_best_checkpoints": 1, "gguf_quantization": "none"})
        job_id, given = record.job_id, record.spec["output_prefix"]
        assert given == f"models/{job_id}"
        # A loses the job (its lease released) with its export still in its thread; B takes it over.
        finished = await take_over(a, b, jobs, job_id, a_exporting, a_done, 600)
        assert finished.state == JobState.SUCCEEDED, finished.error
        mine, old = owner_prefix(given, 2), owner_prefix(given, 1)
        assert (mine, old) == (f"models/{job_id}/g2", f"models/{job_id}")
        result = finished.result
        assert [result[f"{name}_artifact"] for name in ("adapter", "merged", "report")] == \
            [f"{mine}/adapter", f"{mine}/merged", f"{mine}/report"]
        # A's late export wrote under A's own prefix, complete, and left B's keys alone.
        assert "error" not in late, late.get("error")
        assert late["result"]["adapter_artifact"] == f"{old}/adapter"
        assert read_manifest(store, f"{old}/report").digest != read_manifest(store, f"{mine}/report").digest
        assert json.loads(read_file(store, f"{mine}/report", "metrics.json"))["global_step"] == 4
        download_artifact(store, result["adapter_artifact"], tmp_path / "adapter")  # every byte B's manifest names
        # The model keeps the name of the prefix it was given, whichever owner published it.
        assert json.loads(read_file(store, result["adapter_artifact"], LMDEPLOY_FILE))["model_name"] == job_id

        # B resumed from the checkpoint A published (under A's prefix) and published its own under its prefix.
        events = jobs.events(job_id)
        messages = [e.message for e in events]
        assert messages.count("resuming from checkpoint-2") == 1, messages
        steps = [e.data["step"] for e in events if e.type == "progress" and "step" in e.data]
        assert steps == [1, 2, 3, 4, 3, 4], steps
        uploaded = [e.data.get("artifact") for e in events if e.type == "checkpoint"]
        assert uploaded[0] == f"{old}/checkpoints/checkpoint-2" and None in uploaded  # A's checkpoint-4 failed
        assert uploaded[-1] == f"{mine}/checkpoints/checkpoint-4", uploaded
        # Done: every owner's checkpoints are gone from the store.
        assert not list(store.list(f"{old}/checkpoints/")) and not list(store.list(f"{mine}/checkpoints/"))
    finally:
        release_a.set()
        await asyncio.to_thread(a_done.wait, 60)
        await a.shutdown()
        await b.shutdown()


def test_each_owner_of_a_stage_job_writes_under_its_own_generation_of_the_prefix_it_was_given() -> None:
    assert owner_prefix("models/training-1", 1) == "models/training-1"  # the creator: the keys jobs always had
    assert owner_prefix("models/ftjob-1/ftjob-1-g1/", 2) == "models/ftjob-1/ftjob-1-g1/g2"
    assert owner_prefix("validated/v1", 3) == "validated/v1/g3"
