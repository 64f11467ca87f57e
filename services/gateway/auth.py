"""API keys: ``Authorization: Bearer <key>`` checked against every configured key in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from services.gateway.errors import OpenAIError


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: str) -> bool:
        """Compares with every key (no early exit), so timing reveals neither which key nor how much matched."""
        candidate = presented.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for every non-public route."""
    keys: ApiKeys = request.app.state.gateway.api_keys
    if not keys.enabled:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise OpenAIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    if not keys.accepts(token.strip()):
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
