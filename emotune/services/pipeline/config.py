"""Pipeline options; each is an ``EMOTUNE_PIPELINE_*`` env var (or a line in ``.env``). The services it drives
are the shared ``EMOTUNE_<SERVICE>_ADDR`` settings; the lease of its jobs is ``EMOTUNE_JOB_LEASE_SECONDS``."""

from __future__ import annotations

from pydantic import Field

from emotune.settings import Settings


class PipelineSettings(Settings):
    pipeline_max_jobs: int = Field(
        1, ge=1, description="fine-tuning pipelines one replica runs at once (more wait in 'queued' for a free "
        "replica; one GPU trains one job)")
