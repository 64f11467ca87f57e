"""Client channels with deadlines on every call, optional TLS, and status -> domain exception mapping."""

from __future__ import annotations

import json
from typing import Any

import grpc

from emotune import errors
from emotune.grpc.interceptors import ERROR_DETAILS_KEY
from emotune.settings import Settings

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]
# Streams (token streams, job watches) live longer than unary calls but never forever.
DEFAULT_STREAM_DEADLINE_SECONDS = 6 * 3600.0


def _with_timeout(details: grpc.aio.ClientCallDetails, seconds: float) -> grpc.aio.ClientCallDetails:
    """The call's details with ``seconds`` as its deadline unless the caller set one."""
    if details.timeout is not None:
        return details
    return grpc.aio.ClientCallDetails(
        details.method, seconds, details.metadata, details.credentials, details.wait_for_ready
    )


# One class per call type: grpc.aio files an interceptor under the FIRST interceptor type it is an instance of,
# so a single class implementing both would never see streaming calls.
class _UnaryDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(_with_timeout(client_call_details, self.seconds), request)


class _StreamDeadline(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[override]
        return await continuation(_with_timeout(client_call_details, self.seconds), request)


def open_channel(
    address: str, settings: Settings, *, stream_deadline: float = DEFAULT_STREAM_DEADLINE_SECONDS
) -> grpc.aio.Channel:
    interceptors = [_UnaryDeadline(settings.grpc_deadline_seconds), _StreamDeadline(stream_deadline)]
    if settings.grpc_tls_ca:
        creds = grpc.ssl_channel_credentials(root_certificates=settings.grpc_tls_ca.read_bytes())
        return grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS, interceptors=interceptors)


_STATUS_TO_ERROR: dict[grpc.StatusCode, type[errors.EmotuneError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.DATA_LOSS: errors.CorruptArtifact,
}


def error_details(exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_DETAILS_KEY:
            return json.loads(value)
    return {}


def to_domain_error(exc: grpc.aio.AioRpcError) -> errors.EmotuneError:
    """Turn a failed call back into the domain exception the server raised (so the gateway can map to HTTP).

    The message is the server's (already naming file/line/field for bad input); the details trailer restores
    the structured fields (``file``, ``line``, ``field``, ``retry_after`` ...). A deadline that ran out is
    :class:`Unavailable`: the callee was too slow, which retrying later may fix.
    """
    details = {k: v for k, v in error_details(exc).items() if k != "type"}
    cls = _STATUS_TO_ERROR.get(exc.code(), errors.EmotuneError)
    message = exc.details() or exc.code().name
    if cls is errors.InvalidInput:
        err = errors.InvalidInput(message)
        err.file, err.line, err.field = details.get("file"), details.get("line"), details.get("field")
        err.details = details
        return err
    if cls is errors.ResourceExhausted:
        retry_after = details.pop("retry_after", None)
        return errors.ResourceExhausted(message, retry_after=retry_after, **details)
    return cls(message, **details)
