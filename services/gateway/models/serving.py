"""Turn the inference service's model list into OpenAI model cards, one per model and one per style."""

from __future__ import annotations

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


class ModelsServing:
    def __init__(self, inference: InferenceClient) -> None:
        self.inference = inference

    async def list(self) -> ModelList:
        listing = await self.inference.list_models()
        return ModelList(data=model_cards(list(listing.models)))

    async def retrieve(self, model_id: str) -> ModelCard:
        for card in (await self.list()).data:
            if card.id == model_id:
                return card
        raise OpenAIError(404, f"The model `{model_id}` does not exist or is not served.", param="model",
                          code="model_not_found")
