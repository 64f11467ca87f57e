"""``/v1/chat/completions``: OpenAI chat completions, non-streamed or as server-sent events ending in
``[DONE]``, for ``<model>`` and ``<model>:<style>`` ids."""

from emotune.services.gateway.chat.router import router
from emotune.services.gateway.feature import Feature

feature = Feature(router)
