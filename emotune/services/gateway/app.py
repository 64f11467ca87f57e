"""The gateway application factory.

A *feature* is a package or module exposing ``feature = Feature(router, public=..., lifespan=...)``
(:mod:`emotune.services.gateway.feature`).
``create_app`` includes every module of :data:`FEATURE_MODULES`: non-public routers get the API-key
dependency, and each feature's ``lifespan(app)`` runs inside the app's lifespan (to build its services and put
them on ``app.state``). The fine-tuning surface (``/v1/files``, ``/v1/fine_tuning/jobs``) plugs in the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from emotune.logging import get_logger
from emotune.services.gateway.auth import require_api_key
from emotune.services.gateway.config import GatewaySettings
from emotune.services.gateway.context import GatewayContext
from emotune.services.gateway.errors import install_handlers
from emotune.services.gateway.feature import Feature
from emotune.services.gateway.limits import BodySizeLimit
from emotune.services.gateway.metrics import RequestMetrics

log = get_logger(__name__)

FEATURE_MODULES: tuple[str, ...] = (
    "emotune.services.gateway.health",
    "emotune.services.gateway.models",
    "emotune.services.gateway.chat",
    "emotune.services.gateway.completions",
    "emotune.services.gateway.files",
    "emotune.services.gateway.fine_tuning",
)


def load_features(modules: Sequence[str] = FEATURE_MODULES) -> list[Feature]:
    return [importlib.import_module(name).feature for name in modules]


def create_app(settings: GatewaySettings | None = None, features: Sequence[Feature] | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    features = list(features) if features is not None else load_features()
    context = GatewayContext(settings)
    if not context.api_keys.enabled:
        log.warning("gateway API keys are not configured: every request is accepted (dev mode only)")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            stack.push_async_callback(context.channels.close)
            for feature in features:
                if feature.lifespan is not None:
                    await stack.enter_async_context(feature.lifespan(app))
            yield

    app = FastAPI(title="emotune gateway", version="1", lifespan=lifespan,
                  description="OpenAI-compatible API of emotune's styled chat models.")
    app.state.gateway = context
    install_handlers(app)
    for feature in features:
        app.include_router(feature.router, dependencies=[] if feature.public else [Depends(require_api_key)])
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway_max_body_bytes,
                       upload_bytes=settings.gateway_max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"])
    app.add_middleware(RequestMetrics)
    return app
