"""OpenAI's model objects (plus ``parent`` / ``emotune`` details, as vLLM adds ``parent`` / ``root``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class StyleInfo(BaseModel):
    style: str
    system_prompt: str
    # The style's own LoRA adapter where the fine-tune trained one per style ("" = the model's adapter).
    adapter_artifact: str = ""


class ModelDetails(BaseModel):
    engine: str
    base_model: str
    artifact: str
    adapter_artifact: str
    styles: list[StyleInfo]
    # Published fine-tunes are served by every replica until deleted; loaded = in the replica that answered.
    published: bool = False
    loaded: bool = True


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "emotune"
    # For a style id: the model it runs on; None for the model itself.
    parent: str | None = None
    emotune: ModelDetails | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool
