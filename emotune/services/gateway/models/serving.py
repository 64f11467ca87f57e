"""Turn the inference service's model list into OpenAI model cards, one per model and one per style; delete a
published fine-tune; stream its GGUF export (a style id's Modelfile carries the style's trigger as SYSTEM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from emotune.errors import NotFound
from emotune.services.gateway.auth import Caller
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.models.protocol import (
    ModelCard,
    ModelDeleted,
    ModelDetails,
    ModelList,
    StyleInfo,
)
from emotune.services.gateway.owners import ModelDirectory, not_found
from emotune.services.gateway.upstream import InferenceClient
from emotune.store.artifacts import open_file, read_file, read_manifest
from emotune.store.base import ArtifactStore
from emotune.v1 import inference_pb2


def model_cards(models: list[inference_pb2.ModelInfo]) -> list[ModelCard]:
    cards: list[ModelCard] = []
    for model in models:
        details = ModelDetails(
            engine=model.engine, base_model=model.base_model, artifact=model.artifact,
            adapter_artifact=model.adapter_artifact,
            styles=[StyleInfo(style=s.style, system_prompt=s.system_prompt, adapter_artifact=s.adapter_artifact)
                    for s in model.styles],
            published=model.published, loaded=model.loaded,
        )
        cards.append(ModelCard(id=model.id, created=model.created_at, emotune=details))
        cards += [ModelCard(id=f"{model.id}:{s.style}", created=model.created_at, parent=model.id)
                  for s in model.styles]
    return cards


GGUF_FILES = ("model.gguf", "adapter.gguf", "Modelfile")
CHUNK_BYTES = 1 << 20


def style_modelfile(modelfile: bytes, system_prompt: str) -> bytes:
    """The fine-tune's Modelfile with the style's trigger as SYSTEM, so ``ollama run`` speaks that style (Ollama
    puts a Modelfile's SYSTEM first when a request brings no system message)."""
    escaped = system_prompt.replace('"""', '\\"\\"\\"')
    return modelfile.rstrip(b"\n") + f'\nSYSTEM """{escaped}"""\n'.encode()


def gguf_artifact(details: ModelDetails, style: StyleInfo | None = None) -> str | None:
    """The trainer publishes ``<prefix>/gguf`` beside ``<prefix>/adapter`` and ``<prefix>/merged``; a style with
    its own adapter has its own export."""
    source = (style.adapter_artifact if style is not None else "") or details.adapter_artifact or details.artifact
    return f"{source.rstrip('/').rsplit('/', 1)[0]}/gguf" if "/" in source else None


class ModelsServing:
    def __init__(self, inference: InferenceClient, store: ArtifactStore | None, directory: ModelDirectory,
                 caller: Caller) -> None:
        self.inference, self.store, self.directory, self.caller = inference, store, directory, caller

    async def list(self) -> ModelList:
        """The base models and the caller's project's fine-tunes (an admin's: every project's)."""
        models = await self.directory.visible(self.caller, await self.directory.listing())
        return ModelList(data=model_cards(models))

    async def retrieve(self, model_id: str) -> ModelCard:
        for card in (await self.list()).data:
            if card.id == model_id:
                return card
        raise not_found(model_id)

    async def delete(self, model_id: str, delete_artifacts: bool) -> ModelDeleted:
        await self.retrieve(model_id)  # another project's fine-tune: 404, as one that does not exist
        if ":" in model_id:
            parent = model_id.partition(":")[0]
            raise OpenAIError(400, f"`{model_id}` is a style of `{parent}`: delete the model `{parent}`",
                              param="model", code="invalid_model")
        if not await self.inference.forget(model_id, delete_artifacts):
            raise not_found(model_id)
        return ModelDeleted(id=model_id, deleted=True)

    async def gguf_file(self, model_id: str, name: str) -> tuple[int, AsyncIterator[bytes]]:
        """(size, chunks) of one file of a served model's GGUF export; the bytes are checked against the
        manifest's sha256 as they stream (a corrupt file ends the download with an error)."""
        if name not in GGUF_FILES:
            raise OpenAIError(404, f"`{name}` is not a GGUF export file (files: {', '.join(GGUF_FILES)})",
                              param="name", code="file_not_found")
        card = await self.retrieve(model_id)
        style = None
        if card.parent:  # a style id: the fine-tune's (or the style's own) files, its Modelfile with the trigger
            style_name = model_id[len(card.parent) + 1:]
            card = await self.retrieve(card.parent)
            style = next(s for s in card.emotune.styles if s.style == style_name)
        style_prompt = style.system_prompt if style is not None else None
        key = gguf_artifact(card.emotune, style) if card.emotune is not None and self.store is not None else None
        try:
            if key is None:
                raise NotFound("no artifact")
            manifest = await asyncio.to_thread(read_manifest, self.store, key)
            entry = manifest.files[name]
        except (NotFound, KeyError):
            raise OpenAIError(404, f"The model `{model_id}` has no GGUF export (only fine-tuned models have "
                                   "one, unless the job asked for gguf_quantization 'none').", param="model",
                              code="export_not_found") from None
        if style_prompt is not None and name == "Modelfile":
            content = style_modelfile(await asyncio.to_thread(read_file, self.store, key, name), style_prompt)

            async def one_block() -> AsyncIterator[bytes]:
                yield content

            return len(content), one_block()
        stream = await asyncio.to_thread(open_file, self.store, key, name)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while block := await asyncio.to_thread(stream.read, CHUNK_BYTES):
                    yield block
            finally:
                stream.close()

        return entry.size, chunks()
