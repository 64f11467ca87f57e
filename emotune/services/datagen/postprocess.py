"""Data-driven clean-up of teacher replies (rules in ``rules.yaml``), each application reported.

Seed 002 cleaned by hand after the fact: stray quotes around the text, "当前祝福语如下"-style lead-ins, several
paragraphs where one line was asked for. Here each fix is a named rule; the record lists the rules that changed
it and the dataset stats count them, so a rule that fires on half the data is visible, not silent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotune.data.styles import Style
from emotune.data.textio import read_text
from emotune.errors import InvalidInput

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
# Style flags a rule may depend on.
STYLE_FLAGS = ("one_line",)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    kind: Literal["whitespace", "regex", "first_paragraph", "strip_pairs"]
    pattern: str = ""
    replace: str = ""
    ignore_case: bool = False
    pairs: list[str] = Field(default_factory=list)
    only_if: str | None = None

    @field_validator("pairs")
    @classmethod
    def _two_chars(cls, pairs: list[str]) -> list[str]:
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"pair {pair!r} must be exactly two characters (opening and closing)")
        return pairs

    @field_validator("only_if")
    @classmethod
    def _known_flag(cls, flag: str | None) -> str | None:
        if flag is not None and flag not in STYLE_FLAGS:
            raise ValueError(f"unknown style flag {flag!r}; known: {', '.join(STYLE_FLAGS)}")
        return flag

    @model_validator(mode="after")
    def _pattern_compiles(self) -> Rule:
        if self.kind == "regex":
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return self


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


_SPACES = re.compile(r"[ \t\u3000\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _whitespace(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _first_paragraph(text: str) -> str:
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def _strip_pairs(text: str, pairs: list[str]) -> str:
    """Remove quotes wrapping the *whole* text (repeatedly: 「“…”」), never quotes that close mid-text."""
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for opening, closing in pairs:
            inner = text[1:-1]
            if text[0] == opening and text[-1] == closing and opening not in inner and closing not in inner:
                text, changed = inner.strip(), True
                break
    return text


class PostProcessor:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._compiled = {
            r.name: re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0) for r in rules if r.kind == "regex"
        }

    @classmethod
    def load(cls, path: str | Path | None = None) -> PostProcessor:
        path = Path(path) if path else DEFAULT_RULES
        text = read_text(path)
        try:
            data = yaml.safe_load(text)
            return cls(RuleSet.model_validate(data).rules)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InvalidInput(f"not valid YAML: {exc}", file=str(path), line=mark.line + 1 if mark else None) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(err["msg"], file=str(path), field=field) from None

    def _apply_rule(self, rule: Rule, text: str) -> str:
        match rule.kind:
            case "whitespace":
                return _whitespace(text)
            case "regex":
                return self._compiled[rule.name].sub(rule.replace, text, count=1).strip()
            case "first_paragraph":
                return _first_paragraph(text)
            case "strip_pairs":
                return _strip_pairs(text, rule.pairs)
        raise AssertionError(rule.kind)

    def apply(self, text: str, style: Style) -> tuple[str, list[str]]:
        """The cleaned text and the names of the rules that changed it."""
        applied: list[str] = []
        for rule in self.rules:
            if rule.only_if and not getattr(style, rule.only_if):
                continue
            new = self._apply_rule(rule, text)
            if new != text:
                applied.append(rule.name)
                text = new
        return text, applied
