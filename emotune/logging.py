"""Structured logging (structlog over stdlib) that never prints secrets.

Values that are ``SecretStr``, keys that look like credentials, and bearer tokens inside strings are redacted
before rendering, whatever the call site passed.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from pydantic import SecretStr

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token|authorization|credential)", re.IGNORECASE)
_SECRET_IN_TEXT = re.compile(r"(Bearer\s+|sk-|api[_-]?key[=:]\s*)[A-Za-z0-9._\-]{6,}", re.IGNORECASE)
REDACTED = "***"


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return _SECRET_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    return value


def redact_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: _redact_value(k, v) for k, v in event.items()}


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def get_logger(name: str | None = None, **bind: Any) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name).bind(**bind)
