"""One server interceptor that maps exceptions to gRPC status codes and records Prometheus metrics.

Servicers raise domain exceptions (``emotune.errors``) or pydantic ``ValidationError``; clients receive the
mapped code, a readable message and, in the ``emotune-error-bin`` trailer, the details as JSON (file, line,
field, retry_after ...). Unexpected exceptions are logged with an id and answered with INTERNAL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from pydantic import ValidationError

from emotune.errors import EmotuneError
from emotune.logging import get_logger
from emotune.metrics import GRPC_LATENCY, GRPC_REQUESTS

ERROR_DETAILS_KEY = "emotune-error-bin"
log = get_logger(__name__)


def describe_validation_error(exc: ValidationError) -> tuple[str, dict[str, Any]]:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return f"{field}: {first['msg']}", {"field": field, "errors": len(exc.errors())}


def map_exception(exc: BaseException) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    if isinstance(exc, EmotuneError):
        return exc.status, exc.message, {"type": type(exc).__name__, **exc.details}
    if isinstance(exc, ValidationError):
        message, details = describe_validation_error(exc)
        return grpc.StatusCode.INVALID_ARGUMENT, message, {"type": "InvalidInput", **details}
    incident = uuid.uuid4().hex[:12]
    log.error("unhandled exception", incident=incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident})", {"type": "Internal"}


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code, message, details = map_exception(exc)
    context.set_trailing_metadata(((ERROR_DETAILS_KEY, json.dumps(details, default=str).encode()),))
    await context.abort(code, message)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        labels = (self.service, method)

        def finish(started: float, code: grpc.StatusCode) -> None:
            GRPC_REQUESTS.labels(*labels, code.name).inc()
            GRPC_LATENCY.labels(*labels).observe(time.perf_counter() - started)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                started, code = time.perf_counter(), grpc.StatusCode.OK
                try:
                    return await inner(request_or_iterator, context)
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:  # the client went away or its deadline passed
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:  # noqa: BLE001 - every error becomes a status
                    code = _code_of(exc)
                    await _abort(context, exc)
                finally:
                    finish(started, code)

            wrap = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return wrap(unary, handler.request_deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def stream(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                async for item in inner_stream(request_or_iterator, context):
                    yield item
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client went away or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001
                code = _code_of(exc)
                await _abort(context, exc)
            finally:
                finish(started, code)

        wrap = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return wrap(stream, handler.request_deserializer, handler.response_serializer)


def _code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, EmotuneError):
        return exc.status
    if isinstance(exc, ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL
