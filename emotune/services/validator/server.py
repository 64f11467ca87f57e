"""Thin gRPC servicer: proto <-> :mod:`emotune.services.validator.service`, nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import grpc

from emotune.jobs.servicer import JobsServicer
from emotune.services.validator.service import Validator
from emotune.services.validator.spec import spec_from_proto
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, validator_pb2, validator_pb2_grpc


class ValidatorServicer(validator_pb2_grpc.ValidatorServicer):
    def __init__(self, validator: Validator) -> None:
        self.validator = validator

    async def StartValidation(self, request: validator_pb2.ValidationSpec,
                              context: grpc.aio.ServicerContext) -> jobs_pb2.JobRef:
        spec = await asyncio.to_thread(self.validator.check_spec, spec_from_proto(request))
        record = await self.validator.runner.submit(spec.model_dump())
        return jobs_pb2.JobRef(job_id=record.job_id)

    async def Score(self, request: validator_pb2.ScoreRequest,
                    context: grpc.aio.ServicerContext) -> validator_pb2.ScoreResponse:
        result = await asyncio.to_thread(self.validator.core.score, list(request.texts), request.style,
                                         request.styles_yaml, request.embedder, list(request.questions))
        return validator_pb2.ScoreResponse(
            scores=[
                validator_pb2.TextScore(
                    max_similarity=a.max_similarity or 0.0, mean_similarity=a.mean_similarity or 0.0,
                    predicted_style=a.predicted_style or "", marker_score=a.marker_score,
                    reasons=[r.value for r in a.reasons], passed=a.passed, style_margin=a.style_margin or 0.0,
                    style_lift=a.style_lift or 0.0, loop_share=a.loop_share or 0.0,
                    copied_chars=a.copied_chars or 0, relevance=a.relevance, sense=a.sense,
                    centroid_style=a.centroid_style or "",
                )
                for a in result.assessments
            ],
            mean_similarity=result.mean_similarity, style_accuracy=result.style_accuracy, embedder=result.embedder,
            style_score=result.style_score, classifier=result.classifier,
        )

    async def Instruments(self, request: validator_pb2.InstrumentsRequest,
                          context: grpc.aio.ServicerContext) -> validator_pb2.InstrumentsResponse:
        found = self.validator.core.instruments(request.embedder)
        return validator_pb2.InstrumentsResponse(
            measurement_json=json.dumps(found, ensure_ascii=False) if found is not None else "")


def add_servicers(validator: Validator) -> Callable[[grpc.aio.Server], list[str]]:
    """The ``add_servicers`` callback for :func:`emotune.grpc.server.start_server`."""

    def add(server: grpc.aio.Server) -> list[str]:
        validator_pb2_grpc.add_ValidatorServicer_to_server(ValidatorServicer(validator), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(validator.jobs, validator.runner), server)
        return ["emotune.v1.Validator", "emotune.v1.Jobs"]

    return add
