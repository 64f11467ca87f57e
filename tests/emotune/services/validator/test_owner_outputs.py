"""Each owner of one validation job publishes under its own lease generation of the job's ``output_prefix`` (issue
29, item 5, inside a stage service): when one validator replica takes a job over from another, the old owner's
publish still under way cannot land on the new owner's keys, nor become the new owner's result.

Two real ``Validator`` replicas (A, B; each its own S3 client, one loaded core as in one process) on a real S3
server with conditional writes (moto's, a separate process), real leases. A validates, then loses the job while
its publish is in its thread (A stops, releasing its lease; cancelling its task does not stop that thread); B takes
the job over (generation 2) and validates again; A's late publish lands first, then B publishes. Before: both
published under the one ``output_prefix``, and B, finding A's artifacts there, kept them as its own: the job's
result named the old owner's outputs.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from emotune.data.records import dumps_records
from emotune.jobs.runner import owner_prefix
from emotune.jobs.store import JobState, JobStore
from emotune.services.validator.config import ValidatorSettings
from emotune.services.validator.service import Validator, ValidatorCore
from emotune.services.validator.spec import ValidationSpec
from emotune.store.artifacts import ArtifactManifest, publish_artifact, read_manifest
from emotune.store.s3 import S3Store
from tests.emotune.jobs.test_job_cas import moto_endpoint, moto_settings  # noqa: F401 (the fixture)
from tests.support.takeover import take_over

DATASET = "datasets/owners"
GIVEN = "validated/owners"


async def test_an_old_validators_late_publish_does_not_land_on_the_new_owners_keys(
        moto_endpoint: str, good_records, duplicate_records, styles_yaml: str) -> None:  # noqa: F811
    bucket = f"emotune-owners-{uuid.uuid4().hex[:12]}"
    # Lease as in test_server: shorter ones starve on 2 cores while embedding.
    settings = ValidatorSettings(validator_batch_size=8, job_lease_seconds=5)
    core = ValidatorCore(settings)
    a, b = (Validator(settings, S3Store.from_settings(moto_settings(moto_endpoint, bucket)), core) for _ in "ab")
    store = S3Store.from_settings(moto_settings(moto_endpoint, bucket))
    assert store.conditional_writes
    records = [*good_records[:12], duplicate_records[0]]  # 12 kept, 1 near-duplicate (as in test_server)
    publish_artifact(store, DATASET, {"records.jsonl": dumps_records(records).encode()}, {"kind": "dataset"})

    a_publishing, release_a, a_done = threading.Event(), threading.Event(), threading.Event()
    late: dict[str, Any] = {"keys": []}
    run_a, publish_a, publish_b = a._run_job, a._publish_once, b._publish_once

    def a_run_job(*args: Any) -> dict:  # A's job thread: its task's cancellation does not stop it
        try:
            return run_a(*args)
        except Exception as exc:
            late["error"] = exc
            raise
        finally:
            a_done.set()

    def a_publish_held(prefix: str, files: dict, metadata: dict) -> ArtifactManifest:
        if not a_publishing.is_set():
            a_publishing.set()
            release_a.wait(300)
        manifest = publish_a(prefix, files, metadata)
        late["keys"].append(manifest.key_prefix)
        return manifest

    def b_publish_after_a(prefix: str, files: dict, metadata: dict) -> ArtifactManifest:
        release_a.set()  # A's late publish lands first ...
        a_done.wait(300)
        return publish_b(prefix, files, metadata)  # ... then B's

    a._run_job, a._publish_once, b._publish_once = a_run_job, a_publish_held, b_publish_after_a
    jobs = JobStore(store)
    try:
        spec = ValidationSpec(dataset_artifact=DATASET, styles_yaml=styles_yaml, output_prefix=GIVEN)
        job_id = (await a.runner.submit(a.check_spec(spec).model_dump())).job_id
        # A loses the job (its lease released) with its publish still in its thread; B takes it over.
        finished = await take_over(a, b, jobs, job_id, a_publishing, a_done, 300)
        assert finished.state == JobState.SUCCEEDED, finished.error
        mine, old = owner_prefix(GIVEN, 2), owner_prefix(GIVEN, 1)
        assert (mine, old) == (f"{GIVEN}/g2", GIVEN)
        result = finished.result
        assert [result[f"{name}_artifact"] for name in ("kept", "rejected", "report")] == \
            [f"{mine}/kept", f"{mine}/rejected", f"{mine}/report"]
        # A's late publish landed under A's own prefix (its kept set; its next event found its lease gone and
        # stopped its thread); B's artifacts are B's own, published after.
        assert late["keys"][:1] == [f"{old}/kept"], late
        assert set(late["keys"]) <= {f"{old}/kept", f"{old}/rejected", f"{old}/report"}, late
        assert read_manifest(store, f"{mine}/kept").created_at > read_manifest(store, f"{old}/kept").created_at
        assert result["counts"]["kept"] == 12 and result["counts"]["rejected"] == 1
        published = [e.data["key"] for e in jobs.events(job_id) if e.type == "artifact"]
        assert published == [f"{mine}/kept", f"{mine}/rejected", f"{mine}/report"]  # A's task wrote no event
    finally:
        release_a.set()
        await asyncio.to_thread(a_done.wait, 60)
        await a.shutdown()
        await b.shutdown()
