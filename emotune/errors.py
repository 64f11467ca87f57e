"""Domain exceptions shared by every service.

Each carries the gRPC status it maps to (see ``emotune.grpc.interceptors``) and, for bad input, *where* the
problem is (file, line, field), so a user sees "styles.yaml: styles[1].temperature: ..." instead of a traceback.
"""

from __future__ import annotations

import grpc


class EmotuneError(Exception):
    """Base class; ``status`` is the gRPC code the interceptor answers with."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}


class InvalidInput(EmotuneError):
    """Bad user input; names the file, line and field when known."""

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        **details: object,
    ) -> None:
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = ": ".join(p for p in (where, field) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message, file=file, line=line, field=field, **details)
        self.reason = message


class NotFound(EmotuneError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EmotuneError):
    status = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EmotuneError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(EmotuneError):
    """The thing exists but this operation is not allowed on it (e.g. deleting a base model)."""

    status = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(EmotuneError):
    """Capacity is full; ``retry_after`` (seconds) tells the caller when to come back."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after: float | None = None, **details: object) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class DeadlineExceeded(EmotuneError):
    """Work that ran past its time limit and was stopped (e.g. a llama.cpp tool)."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(EmotuneError):
    status = grpc.StatusCode.UNAVAILABLE


class Cancelled(EmotuneError):
    status = grpc.StatusCode.CANCELLED


class CorruptArtifact(EmotuneError):
    """An artifact's bytes do not match its manifest (sha256 / size)."""

    status = grpc.StatusCode.DATA_LOSS
