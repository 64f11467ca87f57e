"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning surface, translated to the pipeline service's gRPC
(``EMOTUNE_PIPELINE_ADDR``). The gateway keeps no job state: any number of replicas serve the same jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emotune.services.gateway.feature import Feature
from emotune.services.gateway.fine_tuning.router import router
from emotune.services.gateway.fine_tuning.serving import FineTuningClient
from emotune.store import open_store
from emotune.v1 import pipeline_pb2_grpc


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    channel = app.state.gateway.channels.get("pipeline")
    app.state.fine_tuning = FineTuningClient(pipeline_pb2_grpc.PipelineStub(channel),
                                             open_store(app.state.gateway.settings))
    yield


feature = Feature(router, lifespan=_lifespan)
