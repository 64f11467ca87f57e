"""Validate a styles document typed or uploaded in the Fine-tune page, before anything is sent anywhere.

Uses the one schema (``emotune.data.styles.parse_styles``) the services use, so the page accepts exactly what the
pipeline accepts, and turns its error into something to show: message, field, line, and the lines around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from emotune.data.styles import StylesDocument, parse_styles
from emotune.data.textio import decode_bytes
from emotune.errors import InvalidInput


@dataclass(frozen=True)
class StylesCheck:
    document: StylesDocument | None = None
    error: InvalidInput | None = None

    @property
    def ok(self) -> bool:
        return self.document is not None


def check_styles(text: str, source: str = "styles.yaml") -> StylesCheck:
    if not text.strip():
        return StylesCheck(error=InvalidInput("the styles document is empty", file=source))
    try:
        return StylesCheck(document=parse_styles(text, source))
    except InvalidInput as err:
        return StylesCheck(error=err)


def read_upload(filename: str, content: bytes) -> str:
    """Text of an uploaded styles file (UTF-8 with or without BOM, or GBK as Windows editors save it)."""
    return decode_bytes(content, source=filename)


def error_context(text: str, line: int | None, radius: int = 2) -> str:
    """The lines around ``line`` with a marker on it, numbered like an editor does."""
    if not line:
        return ""
    lines = text.splitlines()
    first, last = max(1, line - radius), min(len(lines), line + radius)
    width = len(str(last))
    return "\n".join(f"{'>' if n == line else ' '} {n:>{width}} | {lines[n - 1]}" for n in range(first, last + 1))


def styles_table(document: StylesDocument) -> list[dict[str, object]]:
    """One row per style: what the user will get, at a glance."""
    return [
        {
            "style": style.name,
            "temperature": style.temperature,
            "few-shot turns": len(style.few_shot),
            "reference texts": len(style.reference_texts),
            "length": f"{style.length.min}-{style.length.max}",
            "markers": " ".join(style.markers.all) if style.markers else "",
            "serving prompt": style.serving_prompt,
        }
        for style in document.styles
    ]
