"""A published model record (``served/<model id>.json``) is not last-writer-wins between the owners of one
fine-tuning job (issue 29): the ``LoadModel`` of an old pipeline owner still in flight when it lost the job cannot
replace the record the job's newer owner published. Each owner's generation is in the artifact key it publishes
(``models/<job id>/<job id>-g<N>/...``); the record is written with ``If-None-Match`` / ``If-Match``. On the local
store and on a real S3 server with conditional writes (moto's, a separate process), each publish from its own client
as from its own inference replica. Before, the old owner's late publish replaced the newer owner's record."""

from __future__ import annotations

import pytest

from emotune.errors import FailedPrecondition
from emotune.jobs.runner import outputs_owner, owner_outputs
from emotune.services.inference import published
from emotune.services.inference.published import PublishedModel
from tests.emotune.jobs.test_job_cas import cas_stores, moto_endpoint  # noqa: F401 (the fixtures)

MODEL = "ft-smollm2-135m-demo-0123456789abcdef01234567"
JOB = "ftjob-0123456789abcdef01234567"


def record(adapter: str) -> PublishedModel:
    return PublishedModel(id=MODEL, base_model="smollm2-135m", adapter_artifact=adapter)


def adapter_of(generation: int) -> str:
    return f"{owner_outputs('models', JOB, generation)}/adapter"


def test_an_old_owners_late_publish_does_not_replace_a_newer_owners_record(cas_stores) -> None:  # noqa: F811
    store = cas_stores()
    published.publish(store, record(adapter_of(2)))  # the job's owner after a takeover publishes first
    with pytest.raises(FailedPrecondition, match="newer owner of job") as refused:
        published.publish(cas_stores(), record(adapter_of(1)))  # the old owner's LoadModel, late
    assert refused.value.details["published_generation"] == 2
    assert published.read(store, MODEL).adapter_artifact == adapter_of(2)

    # The same owner publishing again (a restarted serving stage), a newer owner, a trainer takeover inside that
    # owner's training run: each replaces the record.
    for adapter in (adapter_of(2), adapter_of(3), f"{owner_outputs('models', JOB, 3)}/g2/adapter"):
        published.publish(cas_stores(), record(adapter))
        assert published.read(store, MODEL).adapter_artifact == adapter
    # Keys of no owner layout (an operator's load, a job from before it) and another job's: last writer, as before.
    other_job = f"{owner_outputs('models', 'ftjob-other', 1)}/adapter"
    for adapter in ("models/ftjob-older/adapter", adapter_of(1), other_job):
        published.publish(cas_stores(), record(adapter))
        assert published.read(store, MODEL).adapter_artifact == adapter


def test_outputs_owner_reads_the_job_and_generation_from_an_output_key() -> None:
    assert outputs_owner(f"{owner_outputs('models', JOB, 2)}/adapter") == (JOB, 2)
    assert outputs_owner(f"{owner_outputs('models', JOB, 12)}/g3/merged") == (JOB, 12)
    assert outputs_owner(f"models/{JOB}/adapter") is None  # jobs from before the owner layout
    assert outputs_owner("models/training-0123/g2/adapter") is None  # a trainer job's own, not a pipeline's
    assert outputs_owner(f"models/{JOB}/{JOB}-gx/adapter") is None
    assert outputs_owner("models/x") is None
