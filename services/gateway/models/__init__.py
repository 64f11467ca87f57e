"""``/v1/models``: every served model and, for models with styles, one ``<model>:<style>`` id per style."""

from services.gateway.feature import Feature
from services.gateway.models.router import router

feature = Feature(router)
