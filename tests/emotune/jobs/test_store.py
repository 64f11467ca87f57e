"""JobStore and JobRunner on both store backends: cross-process event logs, watch offsets, cancel, resume."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from emotune.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobState, JobStore


async def collect(jobs: JobStore, job_id: str, after: int = 0, timeout: float = 60) -> list:
    async def run() -> list:
        return [event async for event in jobs.watch(job_id, after=after, poll_seconds=0.05)]

    return await asyncio.wait_for(run(), timeout)


# --- JobStore ----------------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from emotune.jobs.store import JobState, JobStore
    from emotune.settings import Settings
    from emotune.store import open_store

    jobs = JobStore(open_store(Settings()))
    job_id = sys.argv[1]
    jobs.set_state(job_id, JobState.RUNNING)
    for step in range(1, 6):
        time.sleep(0.1)
        jobs.append(job_id, "progress", f"step {step}", done=step, total=5)
    jobs.set_state(job_id, JobState.SUCCEEDED, result={"rows": 5})
""")


async def test_events_written_by_another_process_are_watched_live(any_store, store_env):
    jobs = JobStore(any_store)
    record = jobs.create("datagen", {"styles": ["温柔"]})
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, record.job_id, env={**os.environ, **store_env}, stderr=subprocess.PIPE)
    try:
        events = await collect(jobs, record.job_id, timeout=120)
    finally:
        _, stderr = await asyncio.wait_for(writer.communicate(), 60)
    assert writer.returncode == 0, stderr.decode()
    assert [e.seq for e in events] == list(range(1, 9))
    assert [(e.type, e.message) for e in events] == [
        ("state", "queued"), ("state", "running"),
        *[("progress", f"step {n}") for n in range(1, 6)],
        ("state", "succeeded"),
    ]
    assert events[3].data == {"done": 2, "total": 5}
    final = jobs.get(record.job_id)  # the stream ended, so the status is final too
    assert final.state == JobState.SUCCEEDED and final.result == {"rows": 5}
    assert jobs.event_count(record.job_id) == 8


async def test_watch_resumes_after_an_offset_and_ends_when_terminal(any_store):
    jobs = JobStore(any_store)
    job_id = jobs.create("training", {}).job_id
    jobs.set_state(job_id, JobState.RUNNING)
    for step in range(1, 4):
        jobs.append(job_id, "metric", f"loss {step}", step=step, loss=1.0 / step)

    async def finish_later() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(jobs.append, job_id, "log", "late")
        await asyncio.to_thread(jobs.set_state, job_id, JobState.FAILED, error="out of memory")

    finisher = asyncio.create_task(finish_later())
    events = await collect(jobs, job_id, after=3)
    await finisher
    assert [e.seq for e in events] == [4, 5, 6, 7]
    assert [e.message for e in events] == ["loss 2", "loss 3", "late", "failed"]
    assert events[-1].data == {"state": "failed", "error": "out of memory"}
    # a finished job: watching from anywhere returns the rest and ends at once
    assert [e.seq for e in await collect(jobs, job_id, after=6)] == [7]
    assert await collect(jobs, job_id, after=7) == []


async def test_watch_unknown_job_is_not_found(any_store):
    with pytest.raises(NotFound, match="job 'nope' not found"):
        await collect(JobStore(any_store), "nope")


def test_sequence_continues_in_a_new_process(any_store):
    first = JobStore(any_store)
    job_id = first.create("x", {}).job_id
    first.append(job_id, "log", "one")
    restarted = JobStore(any_store)  # what a new process sees
    assert restarted.append(job_id, "log", "two").seq == 3
    assert [e.message for e in restarted.events(job_id)] == ["queued", "one", "two"]
    assert [e.seq for e in restarted.events(job_id, after=2)] == [3]


def test_terminal_states_are_final(any_store):
    jobs = JobStore(any_store)
    job_id = jobs.create("x", {}).job_id
    jobs.set_state(job_id, JobState.SUCCEEDED, result={"ok": True})
    with pytest.raises(FailedPrecondition, match="already succeeded"):
        jobs.set_state(job_id, JobState.FAILED, error="late failure")
    assert jobs.get(job_id).state == JobState.SUCCEEDED


def test_a_state_event_is_written_before_the_status_changes(local_store, monkeypatch):
    """What lets watch() end exactly when the status is terminal without missing the terminal event."""
    jobs = JobStore(local_store)
    job_id = jobs.create("x", {}).job_id
    written, put_bytes = [], local_store.put_bytes

    def recording_put(key, *args, **kwargs):
        written.append(key)
        return put_bytes(key, *args, **kwargs)

    monkeypatch.setattr(local_store, "put_bytes", recording_put)
    jobs.set_state(job_id, JobState.SUCCEEDED)
    assert [k.split("/")[1] for k in written] == ["events", "status"]


def test_job_ids_are_unique_and_safe(any_store):
    jobs = JobStore(any_store)
    jobs.create("x", {}, job_id="ftjob-1")
    with pytest.raises(AlreadyExists):
        jobs.create("x", {}, job_id="ftjob-1")
    for bad in ("../other", "a/b", "-lead", "x" * 129, "sp ace", "tab\there"):
        with pytest.raises(InvalidInput) as info:
            jobs.create("x", {}, job_id=bad)
        assert info.value.field == "job_id"
    with pytest.raises(InvalidInput):
        jobs.get("../../etc")


def test_list_newest_first_with_kind_filter_and_limit(any_store):
    jobs = JobStore(any_store)
    ids = []
    for kind in ("datagen", "training", "datagen"):
        ids.append(jobs.create(kind, {"n": len(ids)}).job_id)
        time.sleep(0.01)
        jobs.append(ids[-1], "log", "noise")  # events never show up as jobs
    assert [r.job_id for r in jobs.list()] == ids[::-1]
    assert [r.job_id for r in jobs.list("datagen")] == [ids[2], ids[0]]
    assert [r.job_id for r in jobs.list(limit=1)] == [ids[2]]
    assert jobs.list("nothing") == []


def test_cancel_request_from_another_store_instance(any_store):
    runner_side, other_side = JobStore(any_store), JobStore(any_store)
    job_id = runner_side.create("x", {}).job_id
    runner_side.set_state(job_id, JobState.RUNNING)
    assert other_side.request_cancel(job_id).cancel_requested
    assert runner_side.cancel_requested(job_id) and runner_side.get(job_id).cancel_requested
    assert runner_side.get(job_id).state == JobState.RUNNING  # the runner decides when it has stopped
    assert [r.cancel_requested for r in runner_side.list()] == [True]
    done = runner_side.create("x", {}).job_id
    runner_side.set_state(done, JobState.SUCCEEDED)
    assert not other_side.request_cancel(done).cancel_requested  # finished jobs are left alone
    with pytest.raises(NotFound):
        other_side.request_cancel("missing")


def test_update_keeps_state_and_stores_checkpoint(any_store):
    jobs = JobStore(any_store)
    job_id = jobs.create("x", {"a": 1}).job_id
    jobs.update(job_id, checkpoint={"done": ["q1", "q2"]})
    record = JobStore(any_store).get(job_id)
    assert record.checkpoint == {"done": ["q1", "q2"]} and record.spec == {"a": 1}
    assert record.state == JobState.QUEUED and record.updated_at >= record.created_at


# --- JobRunner ---------------------------------------------------------------------------------------------

async def test_runner_success_records_result_and_progress(any_store):
    jobs = JobStore(any_store)

    async def handler(ctx: JobContext) -> dict:
        assert ctx.spec == {"questions": 3} and not ctx.resumed
        for done in range(1, 4):
            await asyncio.sleep(0.02)
            ctx.progress(done, 3, stage="generate")
        return {"samples": 3}

    runner = JobRunner(jobs, "datagen", handler)
    record = await runner.submit({"questions": 3})
    await runner.wait(record.job_id)
    final = jobs.get(record.job_id)
    assert final.state == JobState.SUCCEEDED and final.result == {"samples": 3}
    events = jobs.events(record.job_id)
    assert [e.type for e in events] == ["state", "state", "progress", "progress", "progress", "state"]
    last_progress = events[-2].data
    assert last_progress["done"] == 3 and last_progress["total"] == 3 and last_progress["stage"] == "generate"
    assert last_progress["eta_s"] == 0.0 and last_progress["rate_per_s"] > 0
    assert events[2].data["eta_s"] is None  # no rate yet after the first report


def test_per_item_progress_is_thinned_to_one_event_per_interval_and_the_last(local_store):
    """A caller reporting every item (the evaluation's ~150 replies) gets the first report, none within
    ``every_s`` of the previous one, and always the final ``done == total``."""
    jobs = JobStore(local_store)
    record = jobs.create("evaluation", {})
    ctx = JobContext(jobs, record, resumed=False)

    def reported() -> list[int]:
        return [e.data["done"] for e in jobs.events(record.job_id) if e.type == "progress"]

    for done in range(1, 51):
        ctx.progress(done, 50, f"{done}/50 replies", every_s=3600.0)
    assert reported() == [1, 50]
    for done in range(1, 4):
        ctx.progress(done, 3)  # without every_s: every report
    assert reported()[2:] == [1, 2, 3]


@pytest.mark.parametrize(
    ("error", "expected"),
    [(ValueError("teacher returned no choices"), "ValueError: teacher returned no choices"),
     (InvalidInput("temperature must be <= 2", file="styles.yaml", line=4, field="temperature"),
      "styles.yaml:4: temperature: temperature must be <= 2")],
)
async def test_runner_failure_is_recorded_with_its_message(local_store, error, expected):
    jobs = JobStore(local_store)

    async def handler(ctx: JobContext) -> dict:
        raise error

    runner = JobRunner(jobs, "x", handler)
    job_id = (await runner.submit({})).job_id
    await runner.wait(job_id)
    record = jobs.get(job_id)
    assert record.state == JobState.FAILED and record.error == expected
    assert jobs.events(job_id)[-1].data == {"state": "failed", "error": expected}


async def test_runner_counts_jobs_by_final_state_with_their_run_time(local_store):
    from prometheus_client import REGISTRY

    jobs, kind = JobStore(local_store), "metrics-probe"
    running_inside: list[float | None] = []

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"kind": kind, **labels}) or 0.0

    async def handler(ctx: JobContext) -> dict:
        running_inside.append(sample("emotune_jobs_running"))
        await asyncio.sleep(3600 if ctx.spec.get("hang") else 0.05)
        if ctx.spec.get("fail"):
            raise InvalidInput("bad spec", field="fail")
        return {}

    runner = JobRunner(jobs, kind, handler, max_concurrent=2)
    for spec in ({}, {}, {"fail": True}):
        await runner.wait((await runner.submit(spec)).job_id)
    hanging = (await runner.submit({"hang": True})).job_id
    while not running_inside[3:]:
        await asyncio.sleep(0.01)
    assert (await runner.cancel(hanging)).state == JobState.CANCELLED
    assert running_inside == [1.0, 1.0, 1.0, 1.0] and sample("emotune_jobs_running") == 0.0
    assert sample("emotune_jobs_finished_total", state="cancelled") == 1
    assert sample("emotune_jobs_finished_total", state="succeeded") == 2
    assert sample("emotune_jobs_finished_total", state="failed") == 1
    assert sample("emotune_job_run_seconds_count", state="succeeded") == 2
    assert 0.1 <= sample("emotune_job_run_seconds_sum", state="succeeded") < 5
    assert sample("emotune_job_run_seconds_bucket", state="failed", le="1.0") == 1


async def test_runner_cancel_stops_a_running_handler(any_store):
    jobs = JobStore(any_store)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def handler(ctx: JobContext) -> dict:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()
        return {}

    runner = JobRunner(jobs, "x", handler)
    job_id = (await runner.submit({})).job_id
    await asyncio.wait_for(started.wait(), 30)
    record = await runner.cancel(job_id)
    assert stopped.is_set()
    assert record.state == JobState.CANCELLED and record.cancel_requested
    assert jobs.events(job_id)[-1].data["state"] == "cancelled"
    assert (await runner.cancel(job_id)).state == JobState.CANCELLED  # cancelling twice is harmless


async def test_handler_sees_a_cancel_requested_elsewhere(local_store):
    jobs = JobStore(local_store)

    async def handler(ctx: JobContext) -> dict:
        for _ in range(2000):
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.01)
        return {"finished": True}

    runner = JobRunner(jobs, "x", handler)
    job_id = (await runner.submit({})).job_id
    await asyncio.sleep(0.1)
    JobStore(local_store).request_cancel(job_id)  # e.g. another process
    await asyncio.wait_for(runner.wait(job_id), 10)
    assert jobs.get(job_id).state == JobState.CANCELLED


async def test_cancel_a_queued_job_no_process_runs(local_store):
    jobs = JobStore(local_store)
    job_id = jobs.create("x", {}).job_id

    async def never(ctx: JobContext) -> dict:
        raise AssertionError("must not run")

    # Nobody holds its lease: after watching it unclaimed for a lease, the canceller claims it and records it.
    record = await JobRunner(jobs, "x", never, lease_seconds=1).cancel(job_id)
    assert record.state == JobState.CANCELLED
    assert not list(local_store.list(f"jobs/leases/{job_id}/"))  # a final job's lease objects are deleted


async def test_max_concurrent_queues_the_rest(local_store):
    jobs = JobStore(local_store)
    running, peak = 0, 0

    async def handler(ctx: JobContext) -> dict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return {}

    runner = JobRunner(jobs, "x", handler, max_concurrent=1)
    ids = [(await runner.submit({"i": i})).job_id for i in range(3)]
    for job_id in ids:
        await runner.wait(job_id)
    assert peak == 1 and all(jobs.get(i).state == JobState.SUCCEEDED for i in ids)


async def test_shutdown_leaves_jobs_resumable_by_the_next_runner(any_store):
    jobs = JobStore(any_store)
    release = asyncio.Event()

    async def first_life(ctx: JobContext) -> dict:
        ctx.save_checkpoint({"done": ctx.checkpoint.get("done", 0) + 1})
        await release.wait()
        return {}

    runner = JobRunner(jobs, "training", first_life, max_concurrent=1)
    running = (await runner.submit({"steps": 2})).job_id
    queued = (await runner.submit({"steps": 1})).job_id
    while not jobs.get(running).checkpoint:
        await asyncio.sleep(0.02)
    await runner.shutdown()
    assert jobs.get(running).state == JobState.RUNNING and jobs.get(queued).state == JobState.QUEUED

    seen = {}

    async def second_life(ctx: JobContext) -> dict:
        seen[ctx.job_id] = (ctx.resumed, dict(ctx.checkpoint))
        return {"resumed_from": ctx.checkpoint.get("done", 0)}

    # Both leases were released: the restart adopts at once, the oldest first, one per free slot; its loop takes
    # the other as soon as the slot is free again.
    restarted = JobRunner(JobStore(any_store), "training", second_life, lease_seconds=2)
    try:
        assert await restarted.start() == [running]
        deadline = time.monotonic() + 30
        while jobs.get(queued).state != JobState.SUCCEEDED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert seen == {running: (True, {"done": 1}), queued: (True, {})}
        assert jobs.get(running).result == {"resumed_from": 1}
        assert "resumed after restart" in [e.message for e in jobs.events(running)]
        assert await restarted.resume_unfinished() == []
    finally:
        await restarted.shutdown()


KILLED_RUNNER = textwrap.dedent("""
    import asyncio, sys
    from emotune.jobs.runner import JobRunner
    from emotune.jobs.store import JobStore
    from emotune.settings import Settings
    from emotune.store import open_store

    async def handler(ctx):
        for done in range(ctx.checkpoint.get("done", 0), 10):
            ctx.save_checkpoint({"done": done + 1})
            ctx.progress(done + 1, 10)
            await asyncio.sleep(0.05 if done < 2 else 3600)  # hangs at step 3: the parent kills us
        return {}

    async def main():
        runner = JobRunner(JobStore(open_store(Settings())), "datagen", handler, lease_seconds=2)
        record = await runner.submit({"questions": 10}, job_id=sys.argv[1])
        await runner.wait(record.job_id)

    asyncio.run(main())
""")


def reported_step_3(jobs: JobStore) -> bool:
    try:
        return any(e.data.get("done") == 3 for e in jobs.events("datagen-killed"))
    except InvalidInput:
        return False


async def test_a_killed_process_is_resumed_from_its_checkpoint(any_store, store_env):
    jobs = JobStore(any_store)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_RUNNER, "datagen-killed", env={**os.environ, **store_env})
    try:
        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(reported_step_3, jobs):  # then it hangs
            assert time.monotonic() < deadline and child.returncode is None
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    assert jobs.get("datagen-killed").state == JobState.RUNNING

    async def handler(ctx: JobContext) -> dict:
        start = ctx.checkpoint["done"]
        for done in range(start, 10):
            ctx.progress(done + 1, 10)
        return {"started_at": start}

    # The killed owner's lease is not released: it is taken over once nothing renewed it for a lease (2 s here).
    runner = JobRunner(JobStore(any_store), "datagen", handler, lease_seconds=2)
    assert await runner.resume_unfinished() == []  # not yet: it was only just seen
    taken_at = time.monotonic()
    await runner.start()
    try:
        events = await collect(jobs, "datagen-killed")
    finally:
        await runner.shutdown()
    assert time.monotonic() - taken_at < 10
    assert jobs.get("datagen-killed").result == {"started_at": 3}
    progress = [e.data["done"] for e in events if e.type == "progress"]
    assert progress == list(range(1, 11))  # nothing lost, nothing repeated
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
