"""One owner per job (emotune.jobs.leases + JobRunner) on both stores (local directory, Swift S3), with real processes.

Leases are short here (2 s on the local store, 4 s on Swift, whose writes on a busy 2-core machine sometimes take
seconds). What is checked: every job runs exactly once with two runners on one store; concurrent claims of one
job have at most one winner; a SIGKILLed owner's job is taken over within the bound and finishes once; an owner
that cannot renew stops before anyone takes over; a graceful shutdown hands over at once; a cancel from a process
that does not run the job is recorded by the owner.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import textwrap
import time
import uuid

import pytest

from emotune.jobs.leases import Leases
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobState, JobStore


def lease_for(store) -> float:
    return 2.0 if store.backend == "local" else 4.0


async def until(predicate, timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(step)


class Ledger:
    """Handler runs per job: (runner name, start, end) intervals, to check 'exactly once' and 'never overlapping'."""

    def __init__(self) -> None:
        self.runs: dict[str, list[list]] = {}

    def handler(self, name: str, seconds: float = 0.3):
        async def run(ctx: JobContext) -> dict:
            entry = [name, time.monotonic(), None]
            self.runs.setdefault(ctx.job_id, []).append(entry)
            try:
                for step in range(3):
                    ctx.progress(step + 1, 3, runner=name)
                    await asyncio.sleep(seconds / 3)
            finally:
                entry[2] = time.monotonic()
            return {"by": name}

        return run

    def assert_no_overlap(self) -> None:
        for job_id, runs in self.runs.items():
            spans = sorted((start, end or time.monotonic()) for _name, start, end in runs)
            for (_s1, e1), (s2, _e2) in itertools.pairwise(spans):
                assert e1 <= s2, f"job {job_id} ran in two places at once: {runs}"


def single_writer(jobs: JobStore, job_id: str) -> None:
    """The event log is gap-free, and the handler's progress events come from one runner, in order."""
    events = jobs.events(job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    progress = [(e.data["runner"], e.data["done"]) for e in events if e.type == "progress"]
    assert progress == [(progress[0][0], d) for d in (1, 2, 3)], progress


async def test_two_runners_run_every_job_exactly_once(any_store):
    lease = lease_for(any_store)
    ledger = Ledger()
    a = JobRunner(JobStore(any_store), "work", ledger.handler("A"), max_concurrent=2, lease_seconds=lease, owner="A")
    b = JobRunner(JobStore(any_store), "work", ledger.handler("B"), max_concurrent=2, lease_seconds=lease, owner="B")
    unowned = [JobStore(any_store).create("work", {"i": i}).job_id for i in range(3)]  # e.g. left by an old version
    try:
        assert await a.start() == [] and await b.start() == []  # nobody may take unclaimed jobs before a lease
        submitted = [(await a.submit({"n": n})).job_id for n in range(4)]
        every = submitted + unowned
        jobs = JobStore(any_store)
        await until(lambda: all(jobs.get(j).state.terminal for j in every), 60)
    finally:
        await a.shutdown()
        await b.shutdown()
    assert {j: len(ledger.runs.get(j, [])) for j in every} == dict.fromkeys(every, 1)
    assert all(ledger.runs[j][0][0] == "A" for j in submitted)  # the creator owns what it submits
    ledger.assert_no_overlap()
    for job_id in every:
        record = jobs.get(job_id)
        assert record.state == JobState.SUCCEEDED and record.result == {"by": ledger.runs[job_id][0][0]}
        single_writer(jobs, job_id)
        assert not list(any_store.list(f"jobs/leases/{job_id}/"))  # a final job's lease objects are gone


async def test_concurrent_claims_have_at_most_one_winner(any_store):
    lease = lease_for(any_store)
    job_id = JobStore(any_store).create("work", {}).job_id
    contenders = [Leases(any_store, lease_seconds=lease, owner=f"c{i}") for i in range(5)]
    winners_per_round = []
    try:
        for _round in range(3):
            view = await contenders[0].io(contenders[0].read, job_id)
            # Every contender saw the same expired snapshot (e.g. all watched it for a lease) and claims at once.
            results = await asyncio.gather(*(c.claim(job_id, view.snapshot) for c in contenders))
            winners = [h for h in results if h is not None]
            winners_per_round.append(len(winners))
            assert len(winners) <= 1, f"{len(winners)} contenders won generation {view.generation + 1}"
            after = await contenders[0].io(contenders[0].read, job_id)
            if winners:
                assert after.generation == winners[0].generation == view.generation + 1
                assert [k for k, _n, _r in after.entries[after.generation]] == [winners[0].key]  # losers cleaned up
    finally:
        for c in contenders:
            c.close()
    assert sum(winners_per_round) >= 2, winners_per_round  # a round may see no winner when Swift is slow


RUNNER = textwrap.dedent("""
    import asyncio, sys, time
    from emotune.jobs.runner import JobRunner
    from emotune.jobs.store import JobStore
    from emotune.settings import Settings
    from emotune.store import open_store

    async def handler(ctx):
        ctx.emit("log", "owner started", pid=__import__("os").getpid())
        for done in range(ctx.checkpoint.get("done", 0), 20):
            ctx.save_checkpoint({"done": done + 1})
            ctx.progress(done + 1, 20)
            await asyncio.sleep(0.05 if done < 2 else 3600)  # hangs at step 3: the parent kills us
        return {}

    async def main():
        runner = JobRunner(JobStore(open_store(Settings())), "work", handler, lease_seconds=float(sys.argv[2]))
        await runner.start()
        await runner.submit({}, job_id=sys.argv[1])
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_a_killed_owner_is_taken_over_once_within_the_bound(any_store, store_env):
    lease = lease_for(any_store)
    jobs, job_id = JobStore(any_store), f"work-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[bool, dict]] = []
    started_at: list[float] = []

    async def handler(ctx: JobContext) -> dict:
        seen.append((ctx.resumed, dict(ctx.checkpoint)))
        started_at.append(time.monotonic())
        for done in range(ctx.checkpoint["done"], 20):
            ctx.progress(done + 1, 20)
        return {"resumed_at": ctx.checkpoint["done"]}

    taker = JobRunner(JobStore(any_store), "work", handler, lease_seconds=lease, owner="taker")
    await taker.start()  # already watching when the owner appears, as another replica would be
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUNNER, job_id, str(lease), env={**os.environ, **store_env})
    try:
        def at_step_3() -> bool:
            try:
                return any(e.data.get("done") == 3 for e in jobs.events(job_id))
            except Exception:  # noqa: BLE001 - not created yet
                return False

        await until(at_step_3, 60)
        assert child.returncode is None and not seen  # owned by the child: the taker keeps off
        await asyncio.sleep(lease)  # a full lease while the owner is alive and renewing: still not taken
        assert not seen and jobs.get(job_id).state == JobState.RUNNING
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.wait_for(child.wait(), 30)
        await until(lambda: jobs.get(job_id).state.terminal, 60)
        took = started_at[0] - killed_at
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        await taker.shutdown()
    bound = lease + taker.scan_every + taker.leases.settle + taker.leases.write_bound + 1  # + slack
    assert took < bound, f"taken over after {took:.1f}s (bound {bound:.1f}s)"
    assert seen == [(True, {"done": 3})]
    record = jobs.get(job_id)
    assert record.state == JobState.SUCCEEDED and record.result == {"resumed_at": 3}
    events = jobs.events(job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.data["done"] for e in events if e.type == "progress"] == list(range(1, 21))  # nothing lost/repeated
    assert "resumed after restart" in [e.message for e in events]


async def test_an_owner_that_cannot_renew_stops_before_anyone_takes_over(local_store, monkeypatch):
    lease = 2.0
    ledger = Ledger()
    a = JobRunner(JobStore(local_store), "work", ledger.handler("A", seconds=30), lease_seconds=lease, owner="A")
    b = JobRunner(JobStore(local_store), "work", ledger.handler("B", seconds=0.3), lease_seconds=lease, owner="B")
    job_id = (await a.submit({})).job_id
    await until(lambda: job_id in ledger.runs, 10)
    renew = a.leases.renew

    def partitioned(held):  # A's writes stop reaching the store (a network partition, a store outage)
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(a.leases, "renew", partitioned)
    try:
        await b.start()
        await until(lambda: jobs_state(local_store, job_id).terminal, 30)
    finally:
        monkeypatch.setattr(a.leases, "renew", renew)
        await a.shutdown()
        await b.shutdown()
    (first, *rest) = ledger.runs[job_id]
    assert first[0] == "A" and [r[0] for r in rest] == ["B"]
    # A stopped itself half a lease after its last renewal; B started only after a full lease unchanged.
    assert first[2] - first[1] < lease, first
    ledger.assert_no_overlap()
    record = JobStore(local_store).get(job_id)
    assert record.state == JobState.SUCCEEDED and record.result == {"by": "B"}  # A recorded nothing final


def jobs_state(store, job_id: str) -> JobState:
    return JobStore(store).get(job_id).state


async def test_graceful_shutdown_hands_over_at_once(any_store):
    lease = 12.0  # longer than the test: only a release lets B in
    ledger = Ledger()
    a = JobRunner(JobStore(any_store), "work", ledger.handler("A", seconds=60), lease_seconds=lease, owner="A")
    b = JobRunner(JobStore(any_store), "work", ledger.handler("B"), lease_seconds=lease, owner="B")
    job_id = (await a.submit({})).job_id
    await until(lambda: job_id in ledger.runs, 10)
    assert await b.resume_unfinished() == []  # owned and renewed
    await a.shutdown()
    assert JobStore(any_store).get(job_id).state == JobState.RUNNING
    started = time.monotonic()
    assert await b.resume_unfinished() == [job_id]
    assert time.monotonic() - started < 10
    await b.wait(job_id)
    await b.shutdown()
    assert [r[0] for r in ledger.runs[job_id]] == ["A", "B"]
    assert JobStore(any_store).get(job_id).result == {"by": "B"}


async def test_cancel_from_a_process_that_does_not_run_the_job(any_store):
    lease = lease_for(any_store)
    started, stopped = asyncio.Event(), asyncio.Event()

    async def long(ctx: JobContext) -> dict:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()
        return {}

    async def never(ctx: JobContext) -> dict:
        raise AssertionError("B must not run it")

    a = JobRunner(JobStore(any_store), "work", long, lease_seconds=lease, owner="A")
    b = JobRunner(JobStore(any_store), "work", never, lease_seconds=lease, owner="B")
    job_id = (await a.submit({})).job_id
    await asyncio.wait_for(started.wait(), 10)
    try:
        record = await b.cancel(job_id)  # B does not run it: A sees the marker at its next renewal
        await a.wait(job_id)  # B returns once the state is final; A's task then deletes the job's lease objects
    finally:
        await a.shutdown()
    assert stopped.is_set()
    assert record.state == JobState.CANCELLED and record.cancel_requested
    events = JobStore(any_store).events(job_id)
    assert events[-1].data["state"] == "cancelled"
    assert not list(any_store.list(f"jobs/leases/{job_id}/"))


@pytest.mark.parametrize("released", [True, False])
async def test_only_claimable_jobs_are_adopted(local_store, released):
    """resume_unfinished adopts a released job at once; an expired one only after watching it for a lease."""
    ledger = Ledger()
    a = JobRunner(JobStore(local_store), "work", ledger.handler("A", seconds=60), lease_seconds=2, owner="A")
    job_id = (await a.submit({})).job_id
    await until(lambda: job_id in ledger.runs, 10)
    if released:
        await a.shutdown()
    else:  # as after kill -9: the tasks stop, nothing is released
        a._shutting_down = True
        for held in list(a._held.values()):
            held.finished = True
        for task in list(a._tasks.values()):
            task.cancel()
        await asyncio.gather(*a._tasks.values(), return_exceptions=True)
    b = JobRunner(JobStore(local_store), "work", ledger.handler("B"), lease_seconds=2, owner="B")
    if released:
        assert await b.resume_unfinished() == [job_id]
    else:
        assert await b.resume_unfinished() == []
        await asyncio.sleep(2.0)
        deadline = time.monotonic() + 10
        while not await b.resume_unfinished():  # a claim that took longer than W withdraws; the next one wins
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    await b.wait(job_id)
    assert JobStore(local_store).get(job_id).result == {"by": "B"}
