"""Styles are data (YAML or JSON), not code.

A styles document lists styles (system prompt, few-shot turns, reference texts, sampling temperature, length
bounds, optional markers, the serving trigger) and, for combinatorial generation (seed 002, Tianji blessings),
recipients x scenes with a compatibility filter. Validation errors name the file, the line and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotune.data.textio import field_path, read_text
from emotune.errors import InvalidInput


class _LocatedError(ValueError):
    """A cross-field problem that knows its location (pydantic gives model-level errors none)."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Turn(_Strict):
    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class LengthBounds(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LengthBounds:
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
    def _unique_and_consistent(self) -> StylesDocument:
        seen: set[str] = set()
        for i, style in enumerate(self.styles):
            if style.name in seen:
                raise _LocatedError(f"style name {style.name!r} appears twice", ("styles", i, "name"))
            seen.add(style.name)
        if self.combinatorial:
            combinatorial = self.combinatorial
            for kind, items in (("recipients", combinatorial.recipients), ("scenes", combinatorial.scenes)):
                names: set[str] = set()
                for i, item in enumerate(items):
                    if item.name in names:
                        raise _LocatedError(f"{item.name!r} appears twice", ("combinatorial", kind, i, "name"))
                    names.add(item.name)
            known = {"recipients": {r.name for r in combinatorial.recipients},
                     "scenes": {s.name for s in combinatorial.scenes}, "styles": seen}
            for i, rule in enumerate(combinatorial.exclude):
                for kind, names_known in known.items():
                    unknown = [name for name in getattr(rule, kind) if name not in names_known]
                    if unknown:
                        raise _LocatedError(f"unknown name(s) {unknown}; known: {sorted(names_known)}",
                                            ("combinatorial", "exclude", i, kind))
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


def _from_seed_style_config(data: dict[str, Any]) -> dict[str, Any]:
    """The seeds' ``style_config.json`` (``{"温柔": {"system_prompt", "examples": [{role, content}...],
    "reference_texts", "temperature"}}``) as a styles document, so users can bring the file they have."""
    styles = []
    for name, spec in data.items():
        spec = dict(spec)
        examples = spec.pop("examples", [])
        if isinstance(examples, list) and all(isinstance(e, dict) and "role" in e for e in examples):
            users = [e.get("content") for e in examples if e.get("role") == "user"]
            replies = [e.get("content") for e in examples if e.get("role") == "assistant"]
            spec["few_shot"] = [{"user": u, "assistant": a} for u, a in zip(users, replies, strict=False)]
        elif examples:
            spec["few_shot"] = examples  # let validation name the field
        styles.append({"name": name, **spec})
    return {"styles": styles}


def _is_seed_style_config(data: dict[str, Any]) -> bool:
    return "styles" not in data and bool(data) and all(
        isinstance(v, dict) and "system_prompt" in v for v in data.values())


def _load_tree(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The parsed document and its YAML node tree (for line numbers). JSON is read as JSON first: PyYAML
    refuses tabs that JSON allows, and replacing them keeps valid JSON's structure and lines."""
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"not valid JSON: {exc.msg} (column {exc.colno})", file=source,
                               line=exc.lineno) from None
        return data, yaml.compose(text.replace("\t", " "))
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InvalidInput(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=source,
                           line=mark.line + 1 if mark else None) from None


def _file_location(loc: tuple[Any, ...], layout: str, names: list[str]) -> tuple[Any, ...]:
    """A StylesDocument location in the file's own layout (bare list or seed config), to find its line."""
    if layout == "document":
        return loc
    if loc[:1] != ("styles",) or len(loc) < 2:
        return ()
    if layout == "list":
        return loc[1:]
    field = {"few_shot": "examples", "name": None}.get(loc[2], loc[2]) if len(loc) > 2 else None
    return (names[loc[1]], field) if field else (names[loc[1]],)


def parse_styles(text: str, source: str = "<styles>") -> StylesDocument:
    """Parse and validate a styles document (YAML or JSON; also a bare list of styles or the seeds'
    ``style_config.json``); errors name ``source``, the line and the field (``styles[1].temperature``)."""
    data, tree = _load_tree(text, source)
    layout, names = "document", []
    if isinstance(data, list):
        data, layout = {"styles": data}, "list"
    elif isinstance(data, dict) and _is_seed_style_config(data):
        data, layout, names = _from_seed_style_config(data), "seed", list(data)
    if not isinstance(data, dict):
        raise InvalidInput("expected a mapping with a 'styles' list", file=source)
    try:
        return StylesDocument.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        located = (err.get("ctx") or {}).get("error")
        loc = tuple(located.loc) if isinstance(located, _LocatedError) else tuple(err["loc"])
        message = str(located) if isinstance(located, _LocatedError) else err["msg"]
        file_loc = _file_location(loc, layout, names)
        # Name the field as the user wrote it: styles[1].temperature, or 毒舌.temperature in a seed config.
        shown = file_loc if layout == "seed" and file_loc else loc
        field = field_path(shown)
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        line = _line_of(tree, file_loc)
        raise InvalidInput(message + more, file=source, line=line, field=field) from None


def load_styles(path: str | Path) -> StylesDocument:
    """Read a styles file (UTF-8 or GBK, see :mod:`emotune.data.textio`) and validate it."""
    path = Path(path)
    return parse_styles(read_text(path), source=str(path))


class _StylesDumper(yaml.SafeDumper):
    """Writes multi-line prompts as ``|`` blocks so a dumped document stays readable."""


_StylesDumper.add_representer(
    str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                                      style="|" if "\n" in text else None))


def dump_styles(document: StylesDocument) -> str:
    """The document as YAML that :func:`parse_styles` reads back to an equal document (to ship styles to
    another service or store them with a job)."""
    data = document.model_dump(mode="json", exclude_none=True)
    return yaml.dump(data, Dumper=_StylesDumper, allow_unicode=True, sort_keys=False, width=1000)
