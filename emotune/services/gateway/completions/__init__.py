"""``/v1/completions``: OpenAI's legacy text completions (a raw prompt continued as-is, no chat template), for
base models and fine-tuned ones; non-streamed or as server-sent events ending in ``[DONE]``."""

from emotune.services.gateway.completions.router import router
from emotune.services.gateway.feature import Feature

feature = Feature(router)
