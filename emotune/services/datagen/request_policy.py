"""Concurrency caps, rate limits and the retry policy around every teacher request.

- :class:`ProviderLimiter`: one per endpoint in the process, shared by all jobs: caps in-flight requests (ZhipuAI
  defaults to 5) and, when the provider answers 429 with Retry-After, holds *every* request to it back for that
  long instead of letting the other workers keep hammering it.
- :class:`RetryPolicy`: tenacity, exponential backoff with jitter, the server's Retry-After honoured (capped).
- :class:`TeacherCaller`: limiter + optional per-job rate (aiolimiter) + retries + output parsing in one call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from emotune.services.datagen import metrics
from emotune.services.datagen.teachers import Teacher, TeacherError, TeacherReply


class ProviderLimiter:
    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._resume_at = 0.0

    def hold(self, seconds: float) -> None:
        """No new request starts for ``seconds`` (the provider asked us to back off)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    @property
    def held_for(self) -> float:
        """Seconds until requests may start again (0 when not held back)."""
        return max(0.0, self._resume_at - time.monotonic())

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            while (delay := self._resume_at - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            yield


class ProviderLimits:
    """The process-wide limiters, one per (provider, base_url)."""

    def __init__(self, max_concurrency: Callable[[str], int]) -> None:
        self._max_concurrency = max_concurrency
        self._limiters: dict[tuple[str, str], ProviderLimiter] = {}

    def get(self, provider: str, base_url: str) -> ProviderLimiter:
        key = (provider, base_url.rstrip("/"))
        if key not in self._limiters:
            self._limiters[key] = ProviderLimiter(self._max_concurrency(provider))
        return self._limiters[key]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    initial: float
    max_wait: float

    def wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it sent one (capped, plus a little jitter so waiting workers do not all
        return in the same millisecond), else exponential backoff with full jitter."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TeacherError) and exc.retry_after is not None:
            base = min(exc.retry_after, self.max_wait)
            return base + random.uniform(0, 0.1 * base + 0.01)
        return wait_exponential_jitter(initial=self.initial, max=self.max_wait, jitter=self.initial)(state)


@dataclass
class Answer:
    reply: TeacherReply
    parsed: Any
    attempts: int
    retry_reasons: list[str] = field(default_factory=list)


class TeacherCaller:
    def __init__(self, teacher: Teacher, limiter: ProviderLimiter, policy: RetryPolicy,
                 requests_per_second: float = 0.0) -> None:
        self.teacher, self.limiter, self.policy = teacher, limiter, policy
        self._rate = AsyncLimiter(requests_per_second, 1.0) if requests_per_second > 0 else None
        self.in_flight = 0

    async def _once(self, messages: list[dict[str, str]], temperature: float, max_tokens: int,
                    stop: Sequence[str]) -> TeacherReply:
        async with self.limiter.slot():
            if self._rate is not None:
                await self._rate.acquire()
            self.in_flight += 1
            started = time.monotonic()
            outcome = "ok"
            try:
                return await self.teacher.complete(messages, temperature=temperature, max_tokens=max_tokens,
                                                   stop=stop)
            except TeacherError as exc:
                outcome = exc.reason
                raise
            finally:
                self.in_flight -= 1
                metrics.TEACHER_REQUESTS.labels(self.teacher.provider, outcome).inc()
                metrics.TEACHER_LATENCY.labels(self.teacher.provider).observe(time.monotonic() - started)

    async def ask(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                  stop: Sequence[str] = (), parse: Callable[[str], Any] | None = None) -> Answer:
        """Ask until a usable answer arrives or the error is final / retries run out (then the last
        :class:`TeacherError` is raised with ``attempts`` and ``retry_reasons`` set). ``parse`` may raise a retryable TeacherError
        (output that is not the JSON asked for), which is retried like a transport error."""
        reasons: list[str] = []

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TeacherError):
                reasons.append(exc.reason)
                metrics.RETRIES.labels(exc.reason).inc()
                if exc.reason == "rate_limited" and exc.retry_after:
                    self.limiter.hold(min(exc.retry_after, self.policy.max_wait))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_retries + 1),
            wait=self.policy.wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, TeacherError) and exc.retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await self._once(messages, temperature, max_tokens, stop)
                    parsed = parse(reply.text) if parse is not None else None
        except TeacherError as exc:
            exc.attempts, exc.retry_reasons = retrying.statistics.get("attempt_number", 1), reasons
            raise
        return Answer(reply, parsed, retrying.statistics.get("attempt_number", 1), reasons)
