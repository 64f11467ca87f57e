"""Styles are data (YAML or JSON), not code.

A styles document lists styles (system prompt, few-shot turns, reference texts, sampling temperature, length
bounds, optional markers, the serving trigger) and, for combinatorial generation (seed 002, Tianji blessings),
recipients x scenes with a compatibility filter. Validation errors name the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotune.errors import InvalidInput


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Turn(_Strict):
    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class LengthBounds(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "LengthBounds":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Markers(_Strict):
    """Expected surface features of the style (emoji, 语气词); a reply should contain at least ``min_hits``."""

    emoji: list[str] = Field(default_factory=list)
    particles: list[str] = Field(default_factory=list)
    min_hits: int = Field(1, ge=0)

    @property
    def all(self) -> list[str]:
        return [*self.emoji, *self.particles]


class Trigger(_Strict):
    """How a serving request selects the style: ``<model>:<name>`` maps to this short system prompt."""

    system_prompt: str = Field(min_length=1)


class Style(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s:/]+$")
    description: str = ""
    system_prompt: str = Field(min_length=1)
    few_shot: list[Turn] = Field(default_factory=list)
    reference_texts: list[str] = Field(default_factory=list)
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    length: LengthBounds = Field(default_factory=LengthBounds)
    markers: Markers | None = None
    # Keep only the first paragraph of a teacher reply (styles that ask for one line, e.g. blessings).
    one_line: bool = False
    language: str = Field("zh", pattern=r"^[a-z]{2}$")
    trigger: Trigger | None = None

    @field_validator("reference_texts")
    @classmethod
    def _non_empty_texts(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"reference text #{i} is empty")
        return texts

    @property
    def serving_prompt(self) -> str:
        """The system prompt applied at serving time for ``<model>:<style>`` (short trigger, else the full one)."""
        return self.trigger.system_prompt if self.trigger else self.system_prompt


class Recipient(_Strict):
    name: str = Field(min_length=1)
    # Natural way a user would mention them in a request, e.g. "我妈妈".
    mention: str = ""


class Scene(_Strict):
    name: str = Field(min_length=1)
    description: str = ""


class CompatibilityRule(_Strict):
    """Skip every (recipient, scene, style) that matches all the given fields (empty = any)."""

    recipients: list[str] = Field(default_factory=list)
    scenes: list[str] = Field(default_factory=list)
    styles: list[str] = Field(default_factory=list)
    reason: str = ""

    def matches(self, recipient: str, scene: str, style: str) -> bool:
        return (
            (not self.recipients or recipient in self.recipients)
            and (not self.scenes or scene in self.scenes)
            and (not self.styles or style in self.styles)
        )


class Combinatorial(_Strict):
    recipients: list[Recipient] = Field(min_length=1)
    scenes: list[Scene] = Field(min_length=1)
    exclude: list[CompatibilityRule] = Field(default_factory=list)
    # Random extra instructions added to generation prompts for variety.
    extra_instructions: list[str] = Field(default_factory=list)

    def allowed(self, recipient: str, scene: str, style: str) -> bool:
        return not any(rule.matches(recipient, scene, style) for rule in self.exclude)


class StylesDocument(_Strict):
    version: int = 1
    styles: list[Style] = Field(min_length=1)
    combinatorial: Combinatorial | None = None

    @model_validator(mode="after")
    def _unique_and_consistent(self) -> "StylesDocument":
        seen: set[str] = set()
        for style in self.styles:
            if style.name in seen:
                raise ValueError(f"style name {style.name!r} appears twice")
            seen.add(style.name)
        if self.combinatorial:
            recipients = {r.name for r in self.combinatorial.recipients}
            scenes = {s.name for s in self.combinatorial.scenes}
            for i, rule in enumerate(self.combinatorial.exclude):
                for kind, names, known in (("recipient", rule.recipients, recipients),
                                           ("scene", rule.scenes, scenes), ("style", rule.styles, seen)):
                    unknown = sorted(set(names) - known)
                    if unknown:
                        raise ValueError(f"combinatorial.exclude[{i}] names unknown {kind}(s) {unknown}")
        return self

    def get(self, name: str) -> Style:
        for style in self.styles:
            if style.name == name:
                return style
        raise InvalidInput(f"unknown style {name!r}; known: {', '.join(self.names)}", field="style")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.styles]


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk a composed YAML node tree along a pydantic error location; return the 1-based line found."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def parse_styles(text: str, source: str = "<styles>") -> StylesDocument:
    """Parse and validate a styles document (YAML or JSON); errors name ``source``, line and field."""
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidInput(f"not valid YAML/JSON: {getattr(exc, 'problem', exc)}", file=source,
                           line=mark.line + 1 if mark else None) from None
    if isinstance(data, list):  # a bare list of styles
        data, tree = {"styles": data}, None
    if not isinstance(data, dict):
        raise InvalidInput("expected a mapping with a 'styles' list", file=source)
    try:
        return StylesDocument.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"])
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise InvalidInput(err["msg"] + more, file=source, line=_line_of(tree, loc), field=field or None) from None


def dump_styles(document: StylesDocument) -> str:
    """The document as YAML (what services receive in job specs); ``parse_styles`` reads it back unchanged."""
    return yaml.safe_dump(document.model_dump(mode="json", exclude_none=True), allow_unicode=True, sort_keys=False)


def load_styles(path: str | Path) -> StylesDocument:
    path = Path(path)
    from emotune.textio import read_text

    return parse_styles(read_text(path), source=str(path))
