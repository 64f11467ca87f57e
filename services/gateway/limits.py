"""Request limits: body size (an ASGI middleware, so an oversized body is refused before it is read) and the
number of chat completions in flight (refused at once with 429 + Retry-After, never queued in the gateway)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import metrics
from services.gateway.errors import OpenAIError, rate_limited


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.message = f"request body is larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = OpenAIError(413, self.message, code="request_too_large")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            """Chunked bodies have no length up front: count while reading (the routes answer 413)."""
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, limited_receive, send)


class ConcurrencyLimit:
    """At most ``limit`` chat completions in flight; ``enter`` refuses (429) instead of waiting."""

    def __init__(self, limit: int, retry_after: int) -> None:
        self.limit, self.retry_after = limit, retry_after
        self.in_flight = 0

    def enter(self) -> None:
        if self.in_flight >= self.limit:
            metrics.REJECTED.labels("gateway_full").inc()
            raise rate_limited(f"the gateway is serving its maximum of {self.limit} concurrent requests; "
                               "retry shortly", self.retry_after)
        self.in_flight += 1
        metrics.IN_FLIGHT.set(self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.set(self.in_flight)
