"""Bounded admission: at most ``max_running`` generations at once, at most ``max_waiting`` queued behind them.

A full queue is refused at once with ResourceExhausted and a ``retry_after`` estimated from recent generation
times, instead of letting requests pile up until their deadlines expire. A slot is released by the engine when
its generation has really stopped (possibly from a worker thread), so ``running`` is the true number of
generations using the CPU/GPU and returns to zero when every caller is gone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

from emotune.errors import ResourceExhausted
from emotune.services.inference import metrics


class Slot:
    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._released = False

    def release(self) -> None:
        """Free the slot; safe to call from any thread and more than once."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._finished(time.monotonic() - self._started)


class Ticket:
    """A place in the queue; ``admitted`` waits for a slot, ``leave`` gives the place up if still waiting."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._queued = True

    async def admitted(self) -> Slot:
        await self._admission._free.acquire()
        self.leave()
        return self._admission._started()

    def leave(self) -> None:
        if self._queued:
            self._queued = False
            self._admission._left_queue()


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running, self.max_waiting = max_running, max_waiting
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(max_running)
        self._recent_durations: deque[float] = deque(maxlen=32)

    def retry_after(self) -> float:
        """Seconds until a queue place is likely free: queued work divided by the parallelism."""
        typical = sorted(self._recent_durations)[len(self._recent_durations) // 2] if self._recent_durations else 1.0
        return float(min(60, max(1, math.ceil(typical * (self.waiting + 1) / self.max_running))))

    def enter(self) -> Ticket:
        """Take a place in the queue at once, or refuse: a caller can report "accepted" before waiting."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            metrics.REJECTED.inc()
            raise ResourceExhausted(
                f"inference is at capacity ({self.running} running, {self.waiting} queued); retry later",
                retry_after=self.retry_after(),
            )
        self.waiting += 1
        metrics.QUEUED.set(self.waiting)
        return Ticket(self)

    async def acquire(self) -> Slot:
        ticket = self.enter()
        try:
            return await ticket.admitted()
        finally:
            ticket.leave()

    def _left_queue(self) -> None:
        self.waiting -= 1
        metrics.QUEUED.set(self.waiting)

    def _started(self) -> Slot:
        self.running += 1
        metrics.IN_FLIGHT.set(self.running)
        return Slot(self)

    def _finished(self, seconds: float) -> None:
        self.running -= 1
        metrics.IN_FLIGHT.set(self.running)
        self._recent_durations.append(seconds)
        self._free.release()
