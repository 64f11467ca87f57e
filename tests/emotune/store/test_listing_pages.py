"""Listing files, jobs and events reads one page from the store, not every object; finished jobs' events expire
when the operator says so (EMOTUNE_JOB_EVENTS_RETENTION_DAYS)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobState, JobStore
from emotune.settings import Settings
from emotune.store.files import FileService
from emotune.store.local import LocalStore


class CountingStore:
    """The local store, counting object reads and listed keys."""

    def __init__(self, store: LocalStore) -> None:
        self._store, self.counts = store, Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_bytes(self, key: str) -> bytes:
        self.counts["read"] += 1
        return self._store.get_bytes(key)

    def list(self, prefix: str = "", start_after: str = ""):
        for info in self._store.list(prefix, start_after):
            self.counts["listed"] += 1
            yield info


@pytest.fixture
def store(tmp_path) -> CountingStore:
    return CountingStore(LocalStore(tmp_path / "store"))


def _walk(read_page, limit: int) -> tuple[list[Any], list[bool]]:
    items, flags, after = [], [], None
    while True:
        page, more = read_page(after, limit)
        items += page
        flags.append(more)
        if not more:
            return items, flags
        after = page[-1]


def test_jobs_are_listed_a_page_at_a_time_newest_first(store):
    jobs = JobStore(store)
    created = []
    for _ in range(25):
        created.append(jobs.create("fine_tuning", {}).job_id)
        time.sleep(0.002)  # distinct milliseconds: newest first is well defined
    jobs.create("training", {})  # another kind is not listed
    jobs.request_cancel(created[-1])
    jobs.page("fine_tuning", None, 1)  # the first listing indexes what an older emotune wrote, once
    store.counts.clear()
    page, more = jobs.page("fine_tuning", None, 10)
    assert [r.job_id for r in page] == created[::-1][:10] and more
    assert page[0].cancel_requested and not page[1].cancel_requested
    assert store.counts["read"] == 10 and store.counts["listed"] <= 12  # the page and the marker, not 26 jobs
    records, flags = _walk(lambda after, n: jobs.page("fine_tuning", after and after.job_id, n), 10)
    assert [r.job_id for r in records] == created[::-1] and flags == [True, True, False]
    assert jobs.page("fine_tuning", "no-such-job", 10) == ([], False)


def test_jobs_created_before_the_index_are_indexed_once(store):
    jobs = JobStore(store)
    created = []
    for _ in range(3):
        created.append(jobs.create("fine_tuning", {}).job_id)
        time.sleep(0.002)
    store.delete_prefix("jobs/index/")  # as a store written by an older emotune
    assert [r.job_id for r in jobs.page("fine_tuning", None, 10)[0]] == created[::-1]
    assert store.exists("jobs/index/built-fine_tuning")


def test_events_are_listed_a_page_at_a_time_newest_first(store):
    jobs = JobStore(store)
    job_id = jobs.create("fine_tuning", {}).job_id  # event 1: queued
    for step in range(60):
        jobs.append(job_id, "metric", f"step {step}", step=step)
    assert jobs.last_seq(job_id) == 61
    store.counts.clear()
    page, more = jobs.events_page(job_id, None, 10)
    assert [e.seq for e in page] == list(range(61, 51, -1)) and more
    assert store.counts["read"] == 10 and store.counts["listed"] < 40  # galloping one-key listings + one page
    events, flags = _walk(lambda after, n: jobs.events_page(job_id, after and after.seq, n), 10)
    assert [e.seq for e in events] == list(range(61, 0, -1)) and flags[-1] is False and len(flags) == 7
    assert jobs.events_page(job_id, 1, 10) == ([], False)
    empty = jobs.create("fine_tuning", {}).job_id
    store.delete_prefix(f"jobs/events/{empty}/")
    assert jobs.events_page(empty, None, 10) == ([], False) and jobs.last_seq(empty) == 0


def test_files_are_listed_a_page_at_a_time_newest_first_by_purpose(store):
    files = FileService(store)
    uploaded = []
    for i in range(12):
        purpose = "emotune-questions" if i % 3 else "emotune-styles"
        content = f"问题{i}\n" if i % 3 else "styles:\n  - name: 温柔\n    system_prompt: 你很温柔。\n"
        uploaded.append((files.create(f"f{i}.txt", purpose, content.encode()).id, purpose))
        time.sleep(0.002)
    newest = [file_id for file_id, _ in uploaded[::-1]]
    # created_at is in seconds (OpenAI's field): within one second the order is by id, still one page per read
    files.page(None, None, 1)  # the first listing indexes what an older emotune wrote, once
    store.counts.clear()
    page, more = files.page(None, None, 5)
    assert len(page) == 5 and more and store.counts["read"] == 5 and store.counts["listed"] <= 7
    walked, flags = _walk(lambda after, n: files.page(None, after and after.id, n), 5)
    assert sorted(f.id for f in walked) == sorted(newest) and flags == [True, True, False]
    assert len({f.id for f in walked}) == 12
    questions, _ = _walk(lambda after, n: files.page("emotune-questions", after and after.id, n), 3)
    assert sorted(f.id for f in questions) == sorted(i for i, p in uploaded if p == "emotune-questions")
    files.delete(uploaded[0][0])
    assert uploaded[0][0] not in {f.id for f in files.list()} and len(files.list()) == 11
    assert files.page("no-such-purpose") == ([], False)


async def _finish(ctx: JobContext) -> dict:
    ctx.emit("progress", "working")
    return {"done": True}


def test_finished_jobs_events_expire_after_the_operators_retention(tmp_path):
    assert Settings().job_events_retention_days == 0  # off unless the operator sets it

    async def scenario() -> None:
        jobs = JobStore(LocalStore(tmp_path / "store"))
        kept = JobRunner(jobs, "demo", _finish, events_retention_days=0)
        await kept.start()
        assert kept._expirer is None
        await kept.shutdown()

        runner = JobRunner(jobs, "demo", _finish, events_retention_days=0.2 / 86400)  # 0.2 s
        runner.expire_every = 0.05
        finished = await runner.submit({})
        await runner.wait(finished.job_id)
        queued = jobs.create("demo", {}).job_id  # not finished: its events stay, however old
        other = jobs.create("other", {}).job_id  # another kind's runner sweeps its own
        assert jobs.events(finished.job_id)
        await runner.start()
        deadline = time.monotonic() + 10
        while jobs.events(finished.job_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await runner.shutdown()
        assert jobs.events(finished.job_id) == [] and jobs.events_page(finished.job_id) == ([], False)
        assert jobs.get(finished.job_id).state == JobState.SUCCEEDED  # the job itself stays
        assert jobs.get(finished.job_id).result == {"done": True}
        assert jobs.events(queued) and jobs.events(other)

    asyncio.run(scenario())


def test_expire_events_only_touches_jobs_finished_before_the_cutoff(store):
    jobs = JobStore(store)
    done = jobs.create("demo", {}).job_id
    jobs.set_state(done, JobState.SUCCEEDED)
    assert jobs.expire_events("demo", timedelta(days=1)) == 0 and jobs.events(done)
    assert jobs.expire_events("demo", timedelta(0)) == 1 and not jobs.events(done)
    assert jobs.expire_events("demo", timedelta(0)) == 0
