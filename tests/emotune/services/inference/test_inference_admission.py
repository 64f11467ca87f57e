"""Bounded admission: refuse when the queue is full, release from worker threads, survive cancelled waiters."""

from __future__ import annotations

import asyncio
import threading

import pytest

from emotune.errors import ResourceExhausted
from emotune.services.inference.admission import Admission


async def test_full_queue_is_refused_with_retry_after_and_slots_free_from_threads():
    admission = Admission(max_running=1, max_waiting=1)
    first = await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0.01)
    assert (admission.running, admission.waiting) == (1, 1)
    with pytest.raises(ResourceExhausted) as refused:
        await admission.acquire()
    assert refused.value.retry_after >= 1

    threading.Thread(target=first.release).start()  # engines release from their worker thread
    second = await asyncio.wait_for(waiter, 2)
    assert (admission.running, admission.waiting) == (1, 0)
    second.release()
    second.release()  # idempotent
    await asyncio.sleep(0.01)
    assert admission.running == 0


async def test_a_cancelled_waiter_leaves_the_queue():
    admission = Admission(max_running=1, max_waiting=4)
    held = await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    held.release()
    again = await asyncio.wait_for(admission.acquire(), 2)
    again.release()
    await asyncio.sleep(0.01)
    assert admission.running == 0


def test_retry_after_is_queued_work_over_parallelism():
    admission = Admission(max_running=2, max_waiting=10)
    assert admission.retry_after() == 1  # nothing measured yet: come back in a second
    admission._recent_durations.extend([4.0, 4.0, 30.0])  # median 4 s per generation
    assert admission.retry_after() == 2  # 4 s x (0 queued + 1) / 2 slots
    admission.waiting = 5
    assert admission.retry_after() == 12
    admission.waiting = 100
    assert admission.retry_after() == 60  # capped


async def test_a_ticket_holds_its_queue_place_until_admitted_or_left():
    admission = Admission(max_running=1, max_waiting=0)
    ticket = admission.enter()  # accepted before any waiting
    with pytest.raises(ResourceExhausted):
        admission.enter()
    ticket.leave()
    assert admission.waiting == 0
    slot = await admission.enter().admitted()
    assert (admission.running, admission.waiting) == (1, 0)
    slot.release()
