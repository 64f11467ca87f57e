"""The model/style picker's data: the gateway's flat list of ids grouped into models and their styles.

The gateway serves ``<model>`` and ``<model>:<style>``; a fine-tuned model is ``ft-<base>-<suffix>-<id>`` and its
styles are ``<fine_tuned_model>:<style>``. So ``a:b`` is style ``b`` of model ``a`` (unless ``b`` itself starts
with ``ft-``, the ``<base>:ft-...`` spelling some OpenAI-style servers use for fine-tuned models).
"""

from __future__ import annotations

from dataclasses import dataclass

FINE_TUNED_PREFIX = "ft-"
NO_STYLE = "(no style)"


@dataclass(frozen=True)
class ModelChoice:
    name: str
    styles: tuple[str, ...]
    plain: bool  # the model itself (without a style) is served

    @property
    def style_options(self) -> list[str]:
        return ([NO_STYLE] if self.plain else []) + list(self.styles)

    def model_id(self, style: str | None) -> str:
        return self.name if style in (None, "", NO_STYLE) else f"{self.name}:{style}"

    @property
    def fine_tuned(self) -> bool:
        return self.name.startswith(FINE_TUNED_PREFIX) or f":{FINE_TUNED_PREFIX}" in self.name


def split_model_id(model_id: str) -> tuple[str, str | None]:
    """``"m:ft-x:warm"`` -> ``("m:ft-x", "warm")``; ``"m:ft-x"`` -> ``("m:ft-x", None)``."""
    head, sep, tail = model_id.rpartition(":")
    if not sep or tail.startswith(FINE_TUNED_PREFIX):
        return model_id, None
    return head, tail


def group_models(model_ids: list[str]) -> list[ModelChoice]:
    """Models in a stable order (base models first, then fine-tuned), each with its styles."""
    styles: dict[str, list[str]] = {}
    plain: set[str] = set()
    for model_id in model_ids:
        name, style = split_model_id(model_id)
        styles.setdefault(name, [])
        if style is None:
            plain.add(name)
        elif style not in styles[name]:
            styles[name].append(style)
    choices = [ModelChoice(name, tuple(found), name in plain) for name, found in styles.items()]
    return sorted(choices, key=lambda c: (c.fine_tuned, c.name))


def find_choice(choices: list[ModelChoice], model_id: str | None) -> tuple[int, str | None]:
    """Index of the model and the style a given id selects (e.g. from a "chat with the result" link)."""
    if model_id:
        name, style = split_model_id(model_id)
        for i, choice in enumerate(choices):
            if choice.name == name and (style is None or style in choice.styles):
                return i, style
    return 0, None
