"""docs/configuration.md documents every environment variable every service reads, once, generated from the
settings classes (field, default, description). The test fails while the file is stale; to rewrite it:

    EMOTUNE_UPDATE_DOCS=1 python -m pytest tests/deploy/test_env_reference.py
"""

from __future__ import annotations

import os
import typing
from pathlib import Path

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from emotune.settings import Settings
from tests.deploy.deploykit import REPO, repo_services

REFERENCE = REPO / "docs" / "configuration.md"
UPDATE = "EMOTUNE_UPDATE_DOCS"

HEADER = """# Configuration reference

Every option of every emotune service is an environment variable (or a `NAME=value` line in `.env` in the
working directory). This page lists each one once: the shared options every service reads, then each service's
own. It is generated from the settings classes (`emotune/settings.py`, `emotune/services/<name>/config.py`) by
`tests/deploy/test_env_reference.py`, which fails while this page is stale; rewrite it with
`EMOTUNE_UPDATE_DOCS=1 python -m pytest tests/deploy/test_env_reference.py`.

Secrets (type `secret`) are never logged. Besides the environment they can be files in `/run/secrets` named
after the variable, e.g. `/run/secrets/EMOTUNE_S3_SECRET_KEY` (the Kubernetes manifests mount them so). With
`EMOTUNE_ENV=prod` a service refuses to start with a placeholder secret (`minioadmin`, `changeme`, ...).
How compose and Kubernetes set these for containers: `docs/deploy.md`.
"""


def _type_name(field: FieldInfo) -> str:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if args and typing.get_origin(annotation) is not typing.Literal:
        annotation = args[0]
        if typing.get_origin(annotation) is typing.Literal:
            return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start-up"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "unset"
    if isinstance(field.default, SecretStr):
        return "dev placeholder"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`" if str(field.default) != "" else "`\"\"`"


def _rows(cls: type[Settings], names: list[str]) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name in names:
        field = cls.model_fields[name]
        alias = field.validation_alias
        variables = [c for c in alias.choices if isinstance(c, str)] if alias is not None and hasattr(
            alias, "choices") else [alias] if isinstance(alias, str) else [f"{prefix}{name}".upper()]
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {', '.join(f'`{v}`' for v in variables)} | {_type_name(field)} | {_default(field)} "
                    f"| {description} |")
    return rows


def render_reference() -> str:
    shared = list(Settings.model_fields)
    parts = [HEADER, "## Shared: every service (`emotune.settings.Settings`)", "", *_rows(Settings, shared), ""]
    for service in repo_services().values():
        own = [name for name in service.settings_cls.model_fields if name not in Settings.model_fields]
        cls = service.settings_cls
        parts.append(f"## {service.name}")
        parts.append("")
        if not service.has_config:
            parts += [f"`emotune/services/{service.name}` reads only the shared options.", ""]
            continue
        parts += [f"`{cls.__module__}.{cls.__name__}`: the shared options and these.", ""]
        parts += [*_rows(cls, own), ""] if own else ["No options of its own.", ""]
    return "\n".join(parts)


def test_every_variable_is_documented_once():
    expected = render_reference()
    if os.environ.get(UPDATE):
        REFERENCE.write_text(expected, encoding="utf-8")
    current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    assert current == expected, f"docs/configuration.md is stale: {UPDATE}=1 python -m pytest {__file__}"
    for service in repo_services().values():
        for variable in service.env_vars:
            assert current.count(f"`{variable}`") == 1, f"{variable} is documented {current.count(variable)} times"


def test_readme_links_the_deployment_guide_and_the_reference():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/deploy.md" in readme and "docs/configuration.md" in readme
    assert (REPO / "docs" / "deploy.md").is_file()
