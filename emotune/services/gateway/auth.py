"""API keys: ``Authorization: Bearer <key>`` checked against every configured key in constant time; the key found
names the caller's project (tenant) and whether it is an admin key, injected into routes as :data:`CallerDep`."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from emotune.projects import DEFAULT_PROJECT, owner_of
from emotune.services.gateway.config import KeyGrant
from emotune.services.gateway.errors import OpenAIError


@dataclass(frozen=True)
class Caller:
    """Who is calling: the project that owns what the request creates, and whether it sees every project."""

    project: str = DEFAULT_PROJECT
    admin: bool = False

    def sees(self, owner: str | None) -> bool:
        """Whether an object stored with ``owner`` (None/'': stored before projects) is visible to the caller."""
        return self.admin or owner_of(owner) == self.project

    @property
    def scope(self) -> str | None:
        """The project to filter listings by; None for an admin (everything)."""
        return None if self.admin else self.project


#: Authentication off (dev mode, no keys): one project, and it sees everything, as before projects existed.
ANYONE = Caller(DEFAULT_PROJECT, admin=True)


class ApiKeys:
    def __init__(self, grants: list[KeyGrant | str]) -> None:
        grants = [KeyGrant(g) if isinstance(g, str) else g for g in grants]
        self._grants = [(grant.key.encode(), Caller(grant.project, grant.admin)) for grant in grants]

    @property
    def enabled(self) -> bool:
        return bool(self._grants)

    def identify(self, presented: str) -> Caller | None:
        """The caller a key stands for, or None. Compares with every key (no early exit), so timing reveals
        neither which key nor how much matched."""
        candidate = presented.encode()
        found: Caller | None = None
        for key, caller in self._grants:
            if hmac.compare_digest(candidate, key):
                found = caller
        return found

    def accepts(self, presented: str) -> bool:
        return self.identify(presented) is not None


async def require_api_key(request: Request) -> None:
    """FastAPI dependency for every non-public route; leaves the caller on ``request.state.caller``."""
    keys: ApiKeys = request.app.state.gateway.api_keys
    if not keys.enabled:
        request.state.caller = ANYONE
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise OpenAIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    caller = keys.identify(token.strip())
    if caller is None:
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
    request.state.caller = caller


def current_caller(request: Request, _: Annotated[None, Depends(require_api_key)]) -> Caller:
    """The caller :func:`require_api_key` found (FastAPI runs that dependency once per request)."""
    return request.state.caller


CallerDep = Annotated[Caller, Depends(current_caller)]
