"""What every gateway route can reach: settings, API keys, the concurrency limit, the upstream services and who
owns which model (``request.app.state.gateway``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from emotune.services.gateway.auth import ApiKeys
from emotune.services.gateway.config import GatewaySettings
from emotune.services.gateway.limits import ConcurrencyLimit
from emotune.services.gateway.owners import ModelDirectory
from emotune.services.gateway.upstream import Channels, InferenceClient


@dataclass
class GatewayContext:
    settings: GatewaySettings
    api_keys: ApiKeys = field(init=False)
    limiter: ConcurrencyLimit = field(init=False)
    channels: Channels = field(init=False)
    inference: InferenceClient = field(init=False)
    models: ModelDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.api_keys = ApiKeys(self.settings.key_grants())
        self.limiter = ConcurrencyLimit(self.settings.gateway_max_concurrent, self.settings.gateway_retry_after_seconds)
        self.channels = Channels(self.settings)
        self.inference = InferenceClient(self.channels)
        self.models = ModelDirectory(self.inference, self.settings)


def gateway_context(request: Request) -> GatewayContext:
    return request.app.state.gateway


Context = Annotated[GatewayContext, Depends(gateway_context)]
