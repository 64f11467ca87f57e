"""Request limits: body size (an ASGI middleware, so an oversized body is refused before it is read) and the
number of chat completions in flight (refused at once with 429 + Retry-After, never queued in the gateway)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotune.services.gateway import metrics
from emotune.services.gateway.errors import OpenAIError, rate_limited

UPLOAD_PATH = "/v1/files"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers, the purpose field: beyond the file's own bytes


class BodySizeLimit:
    """Every body up to ``max_bytes``; a file upload (``POST /v1/files``) up to ``upload_bytes`` of file plus its
    multipart framing (the file service then checks the file's own size)."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.upload_bytes = upload_bytes if upload_bytes is not None else max_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH:
            return (self.upload_bytes + MULTIPART_OVERHEAD,
                    f"file upload is larger than the {self.upload_bytes} byte limit")
        return self.max_bytes, f"request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message_text = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            error = OpenAIError(413, message_text, code="request_too_large")
            await error.response()(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            """Chunked bodies have no length up front: count while reading (the routes answer 413)."""
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, message_text)
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
