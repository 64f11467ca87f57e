"""Job creation and ownership on the store's own compare-and-swap (issue 29, item 5).

Run on the local store and on a real S3 server with conditional writes (moto's S3, ``tests/support/moto_s3.py``,
served one request at a time); the suite's Swift server has none, which the probe must see.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from emotune.errors import AlreadyExists
from emotune.jobs.leases import CasLeases, LeaseLost, Leases, leases_for
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobState, JobStore
from emotune.settings import Settings
from emotune.store.base import ConditionFailed
from emotune.store.local import LocalStore
from emotune.store.s3 import S3Store
from tests.support import free_port

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def moto_endpoint():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.support.moto_s3", str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto's S3 server did not start (pip install -e '.[dev]' installs moto[server])")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def moto_settings(endpoint: str, bucket: str) -> Settings:
    return Settings(store_backend="s3", s3_endpoint=endpoint, s3_access_key=SecretStr("test"),
                    s3_secret_key=SecretStr("test"), s3_bucket=bucket, s3_secure=False)


@pytest.fixture(params=["local", "moto"])
def cas_stores(request, tmp_path):
    """A factory of clients of one store (each call: a new client, as another process would have)."""
    if request.param == "local":
        return lambda: LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = f"emotune-cas-{uuid.uuid4().hex[:12]}"
    return lambda: S3Store.from_settings(moto_settings(endpoint, bucket))


def test_the_probe_finds_conditional_writes_where_the_store_has_them(moto_endpoint, s3_store, local_store):
    assert S3Store.from_settings(moto_settings(moto_endpoint, "emotune-probe")).conditional_writes
    assert local_store.conditional_writes
    assert not s3_store.conditional_writes  # the suite's Swift s3api: 501 on If-None-Match
    assert not list(s3_store.list("_emotune/"))  # the probe object is deleted
    assert leases_for(JobStore(s3_store)).__class__ is Leases  # the timed protocol stays for such stores
    assert isinstance(leases_for(JobStore(local_store)), CasLeases)


def test_conditional_writes_refuse_with_412(cas_stores):
    store = cas_stores()
    etag = store.put_if_absent("cas/x.json", b'{"v": 1}')
    with pytest.raises(ConditionFailed) as refused:
        store.put_if_absent("cas/x.json", b'{"v": 2}')
    assert refused.value.details["http_status"] == 412
    new = store.put_if_match("cas/x.json", b'{"v": 3}', etag)
    with pytest.raises(ConditionFailed) as stale:
        store.put_if_match("cas/x.json", b'{"v": 4}', etag)  # the etag before the last write
    assert stale.value.details["http_status"] == 412
    assert store.get_with_etag("cas/x.json") == (b'{"v": 3}', new)
    with pytest.raises(ConditionFailed):
        store.put_if_match("cas/missing.json", b"{}", etag)


def test_two_creators_with_one_idempotency_key_create_one_job(cas_stores):
    """Creators racing with one job id (what one Idempotency-Key maps to): exactly one creates it."""
    job_id = "ftjob-" + uuid.uuid4().hex[:24]
    creators = [JobStore(cas_stores()) for _ in range(8)]
    start = threading.Barrier(len(creators))
    outcomes: list[str] = []

    def create(jobs: JobStore, i: int) -> None:
        start.wait()
        try:
            jobs.create("fine_tuning", {"creator": i}, job_id)
            outcomes.append("created")
        except AlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(jobs, i)) for i, jobs in enumerate(creators)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["created"] + ["exists"] * (len(creators) - 1)
    events = creators[0].events(job_id)
    assert [(e.seq, e.message) for e in events] == [(1, "queued")]


async def test_two_runners_submitting_one_job_id_run_it_once(cas_stores):
    job_id = "ftjob-" + uuid.uuid4().hex[:24]
    runs: list[str] = []

    def handler(name: str):
        async def run(ctx: JobContext) -> dict:
            runs.append(name)
            return {"by": name}
        return run

    a = JobRunner(JobStore(cas_stores()), "fine_tuning", handler("A"), owner="A")
    b = JobRunner(JobStore(cas_stores()), "fine_tuning", handler("B"), owner="B")
    try:
        outcomes = await asyncio.gather(a.submit({}, job_id), b.submit({}, job_id), return_exceptions=True)
        assert sum(isinstance(o, AlreadyExists) for o in outcomes) == 1, outcomes
        await a.wait(job_id)
        await b.wait(job_id)
    finally:
        await a.shutdown()
        await b.shutdown()
    assert len(runs) == 1
    final = JobStore(cas_stores()).get(job_id)
    assert final.state == JobState.SUCCEEDED and final.result == {"by": runs[0]}


async def test_a_stale_owner_is_refused_by_the_store_after_losing_the_claim(cas_stores):
    """A owns the job; B claims it (A stalled past its lease, say); every status write A then makes is refused
    by the store (412), whatever A's clock says, and B's lease and status stand."""
    jobs_a, jobs_b = JobStore(cas_stores()), JobStore(cas_stores())
    job_id = jobs_a.create("work", {}).job_id
    leases_a = CasLeases(jobs_a, lease_seconds=60, owner="A")
    leases_b = CasLeases(jobs_b, lease_seconds=60, owner="B")
    try:
        held_a = await leases_a.claim(job_id, (0, ()))
        assert held_a is not None and held_a.generation == 1
        jobs_a.set_state(job_id, JobState.RUNNING)
        jobs_a.update(job_id, checkpoint={"step": 1})
        assert leases_a.renew(held_a)[0] == "ok"
        stale_etag = held_a.etag

        held_b = await leases_b.claim(job_id, leases_b.read(job_id).snapshot)  # B takes generation 2
        assert held_b is not None and held_b.generation == 2
        assert held_a.valid()  # by A's clock A still holds the job: only the store can stop it

        with pytest.raises(ConditionFailed) as refused:  # the write itself, as A would send it
            jobs_a.store.put_if_match(jobs_a._status_key(job_id), b'{"state": "succeeded"}', stale_etag)
        assert refused.value.details["http_status"] == 412
        with pytest.raises(LeaseLost):
            jobs_a.update(job_id, checkpoint={"step": 99})
        with pytest.raises(LeaseLost):
            jobs_a.set_state(job_id, JobState.SUCCEEDED, result={"by": "A"})
        assert leases_a.renew(held_a)[0] == "stopped"  # A knows it lost the job

        jobs_b.update(job_id, checkpoint={"step": 2})
        jobs_b.set_state(job_id, JobState.SUCCEEDED, result={"by": "B"})
    finally:
        leases_a.close()
        leases_b.close()
    final = JobStore(cas_stores()).get(job_id)
    assert final.state == JobState.SUCCEEDED and final.result == {"by": "B"} and final.checkpoint == {"step": 2}
    assert leases_b.read(job_id).snapshot[0] == 2
    assert "succeeded" not in [e.message for e in jobs_b.events(job_id)][:-1]  # A's final state never logged


async def test_a_renewal_after_a_takeover_is_lost(cas_stores):
    jobs_a, jobs_b = JobStore(cas_stores()), JobStore(cas_stores())
    job_id = jobs_a.create("work", {}).job_id
    leases_a, leases_b = CasLeases(jobs_a, owner="A"), CasLeases(jobs_b, owner="B")
    try:
        held_a = await leases_a.claim(job_id, (0, ()))
        assert held_a is not None
        snapshot = leases_b.read(job_id).snapshot
        assert await leases_b.claim(job_id, snapshot) is not None
        assert leases_a.renew(held_a)[0] == "lost"
        assert await leases_a.claim(job_id, snapshot) is None  # the snapshot it saw is gone
    finally:
        leases_a.close()
        leases_b.close()


async def test_jobs_run_and_hand_over_on_a_conditional_write_server(cas_stores):
    """The whole runner on compare-and-swap: run, release on shutdown, adopted at once by another runner."""
    started = asyncio.Event()

    async def slow(ctx: JobContext) -> dict:
        ctx.save_checkpoint({"owner": "A"})
        ctx.emit("log", "A working")
        started.set()
        await asyncio.sleep(60)
        return {"by": "A"}

    async def quick(ctx: JobContext) -> dict:
        ctx.emit("log", f"B resumes after {ctx.checkpoint}")
        return {"by": "B"}

    a = JobRunner(JobStore(cas_stores()), "work", slow, lease_seconds=4, owner="A")
    b = JobRunner(JobStore(cas_stores()), "work", quick, lease_seconds=4, owner="B")
    job_id = (await a.submit({})).job_id
    await asyncio.wait_for(started.wait(), 30)
    await a.shutdown()  # releases the lease
    try:
        assert await b.resume_unfinished() == [job_id]
        await b.wait(job_id)
    finally:
        await b.shutdown()
    jobs = JobStore(cas_stores())
    final = jobs.get(job_id)
    assert final.state == JobState.SUCCEEDED and final.result == {"by": "B"}
    messages = [e.message for e in jobs.events(job_id)]
    assert messages == ["queued", "running", "A working", "resumed after restart",
                        "B resumes after {'owner': 'A'}", "succeeded"]
    assert [e.seq for e in jobs.events(job_id)] == list(range(1, len(messages) + 1))
