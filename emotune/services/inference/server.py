"""Thin gRPC servicer: ``emotune.v1.Inference`` messages <-> :class:`InferenceService` / :class:`ModelRegistry`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc

from emotune.errors import InvalidInput
from emotune.services.inference.engines.base import TokenLogprob
from emotune.services.inference.registry import LoadSpec, ServedModel
from emotune.services.inference.service import InferenceService
from emotune.v1 import inference_pb2, inference_pb2_grpc

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


def model_info(served: ServedModel) -> inference_pb2.ModelInfo:
    info = spec_info(served.spec, served.model.engine, served.created_at, published=served.published)
    info.MergeFrom(inference_pb2.ModelInfo(
        memory_bytes=served.model.memory_bytes, eos_token_ids=list(served.model.eos_token_ids),
        max_context=served.model.max_context, loaded=True))
    return info


def spec_info(spec: LoadSpec, engine: str, created_at: int, *, published: bool) -> inference_pb2.ModelInfo:
    return inference_pb2.ModelInfo(
        id=spec.model_id, engine=engine, artifact=spec.artifact, base_model=spec.base_model,
        adapter_artifact=spec.adapter_artifact,
        styles=[inference_pb2.StyleTrigger(style=s, system_prompt=p,
                                           adapter_artifact=dict(spec.style_adapters).get(s, ""))
                for s, p in spec.styles],
        created_at=created_at, published=published,
    )


def logprob_messages(logprobs: list[TokenLogprob]) -> list[inference_pb2.TokenLogprob]:
    return [inference_pb2.TokenLogprob(token=p.token, logprob=p.logprob, bytes=p.bytes,
                                       top_logprobs=logprob_messages(list(p.top))) for p in logprobs]


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self.registry = service.registry

    async def Chat(self, request: inference_pb2.ChatRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[inference_pb2.ChatChunk]:
        sampling = request.sampling
        params = self.service.params(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature if sampling.HasField("temperature") else None,
            top_p=sampling.top_p if sampling.HasField("top_p") else None,
            stop=list(sampling.stop), seed=sampling.seed if sampling.HasField("seed") else None,
            presence_penalty=sampling.presence_penalty, frequency_penalty=sampling.frequency_penalty,
            logprobs=sampling.logprobs, top_logprobs=sampling.top_logprobs, json_schema=sampling.json_schema,
        )
        prompt = request.prompt if request.HasField("prompt") else None
        if prompt is not None and request.messages:
            raise InvalidInput("give messages or a raw prompt, not both", field="prompt")
        messages = self.service.messages([(m.role, m.content) for m in request.messages]) if prompt is None else []
        held: list[str] = []
        held_logprobs: list[TokenLogprob] = []
        async for chunk in self.service.chat(request.model, messages, params, prompt):
            if not chunk.finish_reason:
                if request.whole_reply and (chunk.text or chunk.logprobs):
                    held.append(chunk.text)
                    held_logprobs += chunk.logprobs
                    continue
                yield inference_pb2.ChatChunk(text=chunk.text, logprobs=logprob_messages(chunk.logprobs))
                continue
            usage = inference_pb2.Usage(prompt_tokens=chunk.prompt_tokens, completion_tokens=chunk.completion_tokens)
            yield inference_pb2.ChatChunk(text="".join([*held, chunk.text]), finish_reason=chunk.finish_reason,
                                          usage=usage, logprobs=logprob_messages([*held_logprobs, *chunk.logprobs]))

    async def ListModels(self, request: inference_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> inference_pb2.ListModelsResponse:
        admission = self.service.admission
        loaded, elsewhere = await self.registry.listing()
        models = [model_info(m) for m in loaded] + [
            spec_info(LoadSpec.of(r), r.engine or self.registry.default_engine, r.created_at, published=True)
            for r in elsewhere]
        return inference_pb2.ListModelsResponse(
            models=sorted(models, key=lambda m: m.id), in_flight=admission.running,
            queued=admission.waiting, max_concurrency=admission.max_running, max_queue=admission.max_waiting,
        )

    async def LoadModel(self, request: inference_pb2.LoadModelRequest,
                        context: grpc.aio.ServicerContext) -> inference_pb2.ModelInfo:
        served = await self.registry.load(LoadSpec(
            model_id=request.model_id, artifact=request.artifact, adapter_artifact=request.adapter_artifact,
            base_model=request.base_model, engine=request.engine,
            styles=tuple((t.style, t.system_prompt) for t in request.styles),
            style_adapters=tuple((t.style, t.adapter_artifact) for t in request.styles if t.adapter_artifact),
        ), publish=request.publish)
        return model_info(served)

    async def UnloadModel(self, request: inference_pb2.UnloadModelRequest,
                          context: grpc.aio.ServicerContext) -> inference_pb2.UnloadModelResponse:
        unloaded = await self.registry.unload(request.model_id, forget=request.forget,
                                              delete_artifacts=request.delete_artifacts)
        return inference_pb2.UnloadModelResponse(unloaded=unloaded)


def add_servicers(service: InferenceService) -> Callable[[grpc.aio.Server], list[str]]:
    """The ``add_servicers`` callback for :func:`emotune.grpc.server.start_server`."""

    def add(server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(service), server)
        return [SERVICE_NAME]

    return add
