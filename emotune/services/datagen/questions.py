"""Seed questions of a job: a file (or folder) in the artifact store read by ``emotune.data.importers``, plus inline
questions. The store object is copied to a temporary directory because the importers read paths (a WeChat export
is a folder, a ChatGPT export may be a zip)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from emotune.data.importers import Dialogue, import_questions
from emotune.data.textio import LineError
from emotune.errors import InvalidInput, NotFound
from emotune.services.datagen.spec import QuestionSourceSpec
from emotune.store.base import ArtifactStore


@dataclass
class Questions:
    questions: list[str]
    dialogues: list[Dialogue]
    source: str
    errors: list[LineError] = field(default_factory=list)


def _download(store: ArtifactStore, key: str, dest: Path) -> Path:
    """The object ``key``, or every object under ``key/`` (a folder export), copied below ``dest``."""
    if store.exists(key):
        return store.get_file(key, dest / Path(key).name)
    root = dest / Path(key).name
    found = False
    for info in store.list(key + "/"):
        store.get_file(info.key, root / info.key[len(key) + 1:])
        found = True
    if not found:
        raise NotFound(f"question source {key!r} is not in the artifact store", field="questions.artifact_key")
    return root


def load_questions(store: ArtifactStore, source: QuestionSourceSpec) -> Questions:
    questions: list[str] = []
    dialogues: list[Dialogue] = []
    errors: list[LineError] = []
    if source.artifact_key:
        with tempfile.TemporaryDirectory(prefix="emotune-questions-") as tmp:
            path = _download(store, source.artifact_key, Path(tmp))
            imported = import_questions(path, source.format or None, source.field_path or None,
                                        limit=source.limit or None)
        # Messages should name the store key, not the temporary copy.
        errors = [LineError(e.file.replace(str(path), source.artifact_key), e.line, e.message, e.field)
                  for e in imported.report.errors]
        questions, dialogues = imported.questions, imported.dialogues
    questions += [q.strip() for q in source.questions if q.strip()]  # repeats are dropped by the plan
    if source.limit:
        questions, dialogues = questions[:source.limit], dialogues[:source.limit]
    if not questions and not dialogues:
        detail = f" ({len(errors)} unreadable item(s), first: {errors[0]})" if errors else ""
        raise InvalidInput(f"no questions found{detail}", file=source.artifact_key or None, field="questions")
    return Questions(questions, dialogues, source.artifact_key or "inline", errors)
