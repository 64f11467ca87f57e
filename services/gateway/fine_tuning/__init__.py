"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning surface driving emotune's pipeline
(datagen -> validator -> trainer -> serving -> evaluation). Needs the files feature (it reads ``app.state.files``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emotune.jobrunner import JobRunner
from emotune.jobs import JobStore
from services.gateway.feature import Feature
from services.gateway.fine_tuning.pipeline import Pipeline, ServiceChannels
from services.gateway.fine_tuning.router import router
from services.gateway.fine_tuning.serving import KIND, FineTuningService


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    context = app.state.gateway
    files = app.state.files
    channels = ServiceChannels(*(context.channels.get(name) for name in ("datagen", "validator", "trainer",
                                                                        "inference")))
    pipeline = Pipeline(files.store, files, channels,
                        zhipuai_available=context.settings.zhipuai_api_key is not None)
    runner = JobRunner(JobStore(files.store), KIND, pipeline.run,
                       max_concurrent=context.settings.gateway_max_fine_tuning_jobs)
    app.state.fine_tuning = FineTuningService(runner.jobs, runner, files, files.store)
    await runner.resume_unfinished()  # a restarted gateway picks its pipelines up where they were
    try:
        yield
    finally:
        await runner.shutdown()


feature = Feature(router, lifespan=_lifespan)
