"""OpenAI-shaped errors: every failure is ``{"error": {"message", "type", "param", "code"}}`` with the status
code OpenAI uses, so the official clients raise their usual exceptions (``AuthenticationError``,
``NotFoundError``, ``BadRequestError``, ``RateLimitError`` ...)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emotune import errors
from emotune.grpc.client import to_domain_error
from emotune.logging import get_logger

log = get_logger(__name__)


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def rate_limited(message: str, retry_after: float) -> OpenAIError:
    seconds = max(1, round(retry_after))
    return OpenAIError(429, message, type="requests", code="rate_limit_exceeded",
                       headers={"Retry-After": str(seconds)})


# Inference's request fields under the OpenAI parameter that sets them (others: the part after "sampling.").
UPSTREAM_PARAMS = {"sampling.json_schema": "response_format"}


def openai_param(field: str) -> str:
    return UPSTREAM_PARAMS.get(field, field.removeprefix("sampling."))


def from_domain(exc: errors.EmotuneError) -> OpenAIError:
    """A domain error (raised here or returned by a service over gRPC) as the matching OpenAI error."""
    if isinstance(exc, errors.InvalidInput):
        field = exc.details.get("field")
        return OpenAIError(400, exc.message, param=openai_param(str(field)) if field else None)
    if isinstance(exc, errors.NotFound):
        model = exc.details.get("model")
        if model:
            return OpenAIError(404, f"The model `{model}` does not exist or is not served: {exc.message}",
                               param="model", code="model_not_found")
        return OpenAIError(404, exc.message, code="not_found")
    if isinstance(exc, errors.PermissionDenied):
        return OpenAIError(403, exc.message, code="permission_denied")
    if isinstance(exc, errors.ResourceExhausted):
        return rate_limited(exc.message, exc.retry_after or 1)
    if isinstance(exc, errors.FailedPrecondition | errors.AlreadyExists):
        return OpenAIError(409 if isinstance(exc, errors.AlreadyExists) else 400, exc.message)
    if isinstance(exc, errors.Unavailable):
        return OpenAIError(503, exc.message, type="server_error", code="service_unavailable")
    if isinstance(exc, errors.Cancelled):
        return OpenAIError(503, f"the generation was cancelled upstream: {exc.message}", type="server_error")
    return internal_error(exc)


def from_rpc(exc: grpc.aio.AioRpcError) -> OpenAIError:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return OpenAIError(504, "the model did not finish within the gateway's request timeout",
                           type="server_error", code="timeout")
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return OpenAIError(503, f"an emotune service is unreachable: {exc.details()}", type="server_error",
                           code="service_unavailable")
    return from_domain(to_domain_error(exc))


def internal_error(exc: BaseException) -> OpenAIError:
    incident = uuid.uuid4().hex[:12]
    log.error("unhandled error", incident=incident, exc_info=exc)
    return OpenAIError(500, f"internal error (incident {incident})", type="server_error")


# pydantic's names of the branches of a union in an error's location ("str", "function-after[...]"), not fields.
_BRANCH = re.compile(r"^(str|int|float|bool|list|dict|none)$|\[")


def _param(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path") and not (isinstance(p, str) and _BRANCH.search(p))]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(errors.EmotuneError)
    async def _domain(_: Request, exc: errors.EmotuneError) -> JSONResponse:
        return from_domain(exc).response()

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return from_rpc(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Of a union's failed branches, our own validators say what is wrong; "not a string" says less.
        first = next((e for e in exc.errors() if e.get("type") == "value_error"), exc.errors()[0])
        param = _param(tuple(first.get("loc", ())))
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return OpenAIError(400, message, param=param or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return OpenAIError(exc.status_code, str(exc.detail), type=kind,
                           headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc).response()
