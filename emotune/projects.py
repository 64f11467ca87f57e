"""Projects (tenants): every API key belongs to one, and the files, fine-tuning jobs and fine-tuned models made
with it belong to that project. Another project's objects are invisible (404); base models are shared.

Objects stored before projects existed carry no owner: they belong to :data:`DEFAULT_PROJECT`, the project of
every key of the flat key list (``EMOTUNE_GATEWAY_API_KEYS``), so a deployment without a projects file behaves
as before. See docs/security.md.
"""

from __future__ import annotations

import re

from emotune.errors import InvalidInput

DEFAULT_PROJECT = "default"
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def validate_project(name: str) -> str:
    """A project name is part of store keys: 1-64 letters, digits, '.', '_' or '-' (not first)."""
    if not isinstance(name, str) or not _PROJECT.match(name):
        raise InvalidInput(f"project name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                           "(not starting with '.', '_', '-')", field="project")
    return name


def owner_of(stored: str | None) -> str:
    """The project owning an object from its stored owner field ('' or absent: stored before projects)."""
    return stored or DEFAULT_PROJECT
