"""A stage job taken over from its owner while that owner still uploads (issue 29, item 5): the scenario of
``tests/emotune/services/trainer/test_owner_outputs.py`` and ``tests/emotune/services/validator/test_owner_outputs.py``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from emotune.jobs.store import JobRecord, JobStore
from tests.emotune.jobs.test_leases import until


async def take_over(old: Any, new: Any, jobs: JobStore, job_id: str, old_busy: threading.Event,
                    old_done: threading.Event, timeout: float) -> JobRecord:
    """Once the service ``old`` is busy in a thread its task's cancellation does not stop (``old_busy`` set), make
    it lose the job (it stops, releasing its lease), let the service ``new`` take the job over (generation 2), and
    return the job's record once the job ended and ``old``'s thread finished (``old_done`` set)."""
    await asyncio.to_thread(old_busy.wait, timeout)
    await old.shutdown()
    assert job_id in await new.start_runner()
    await until(lambda: jobs.get(job_id).state.terminal, timeout, 0.2)
    await asyncio.to_thread(old_done.wait, 60)
    return jobs.get(job_id)
