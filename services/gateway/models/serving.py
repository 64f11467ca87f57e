"""Turn the inference service's model list into OpenAI model cards, one per model and one per style."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from emotune.errors import NotFound
from emotune.store.artifacts import open_file, read_manifest
from emotune.store.base import ArtifactStore
from emotune.v1 import inference_pb2
from services.gateway.errors import OpenAIError
from services.gateway.models.protocol import ModelCard, ModelDetails, ModelList, StyleInfo
from services.gateway.upstream import InferenceClient


def model_cards(models: list[inference_pb2.ModelInfo]) -> list[ModelCard]:
    cards: list[ModelCard] = []
    for model in models:
        details = ModelDetails(
            engine=model.engine, base_model=model.base_model, artifact=model.artifact,
            adapter_artifact=model.adapter_artifact,
            styles=[StyleInfo(style=s.style, system_prompt=s.system_prompt) for s in model.styles],
        )
        cards.append(ModelCard(id=model.id, created=model.created_at, emotune=details))
        cards += [ModelCard(id=f"{model.id}:{s.style}", created=model.created_at, parent=model.id)
                  for s in model.styles]
    return cards


GGUF_FILES = ("model.gguf", "adapter.gguf", "Modelfile")
CHUNK_BYTES = 1 << 20


def gguf_artifact(details: ModelDetails) -> str | None:
    """The trainer publishes ``<prefix>/gguf`` beside ``<prefix>/adapter`` and ``<prefix>/merged``."""
    source = details.adapter_artifact or details.artifact
    return f"{source.rstrip('/').rsplit('/', 1)[0]}/gguf" if "/" in source else None


class ModelsServing:
    def __init__(self, inference: InferenceClient, store: ArtifactStore | None = None) -> None:
        self.inference, self.store = inference, store

    async def list(self) -> ModelList:
        listing = await self.inference.list_models()
        return ModelList(data=model_cards(list(listing.models)))

    async def retrieve(self, model_id: str) -> ModelCard:
        for card in (await self.list()).data:
            if card.id == model_id:
                return card
        raise OpenAIError(404, f"The model `{model_id}` does not exist or is not served.", param="model",
                          code="model_not_found")

    async def gguf_file(self, model_id: str, name: str) -> tuple[int, AsyncIterator[bytes]]:
        """(size, chunks) of one file of a served model's GGUF export; the bytes are checked against the
        manifest's sha256 as they stream (a corrupt file ends the download with an error)."""
        if name not in GGUF_FILES:
            raise OpenAIError(404, f"`{name}` is not a GGUF export file (files: {', '.join(GGUF_FILES)})",
                              param="name", code="file_not_found")
        card = await self.retrieve(model_id)
        key = gguf_artifact(card.emotune) if card.emotune is not None and self.store is not None else None
        try:
            if key is None:
                raise NotFound("no artifact")
            manifest = await asyncio.to_thread(read_manifest, self.store, key)
            entry = manifest.files[name]
        except (NotFound, KeyError):
            raise OpenAIError(404, f"The model `{model_id}` has no GGUF export (only fine-tuned models have "
                                   "one, unless the job asked for gguf_quantization 'none').", param="model",
                              code="export_not_found") from None
        stream = await asyncio.to_thread(open_file, self.store, key, name)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while block := await asyncio.to_thread(stream.read, CHUNK_BYTES):
                    yield block
            finally:
                stream.close()

        return entry.size, chunks()
