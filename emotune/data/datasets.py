"""Reading a dataset from the store: a dataset artifact's ``records.jsonl`` or a plain JSONL object, one rule for
every stage that reads one (the trainer, the validator).

A key is checked before any work starts (:func:`check_dataset`), so a bad key fails at submission, not minutes later.
Bad input never loses good samples (:func:`read_dataset`): a broken JSON line, a record missing a field and a line
in another encoding than the rest of the file (a GBK line pasted into a UTF-8 file) are each reported with file,
line and field, and every other line is read.
"""

from __future__ import annotations

from emotune.data.formats import DatasetFormat, parse_dataset
from emotune.data.records import RECORDS_FILE, Record
from emotune.data.textio import LineError, ReadReport, decode_bytes
from emotune.errors import InvalidInput, NotFound
from emotune.store.artifacts import read_file, read_manifest
from emotune.store.base import ArtifactStore


def check_dataset(store: ArtifactStore, key: str, field_name: str = "dataset_artifact") -> bool:
    """Whether ``key`` is a dataset artifact (True) or a plain JSONL object (False); NotFound / InvalidInput,
    naming ``field_name``, if neither."""
    try:
        manifest = read_manifest(store, key)
    except NotFound:
        if not store.exists(key):
            raise NotFound(f"no dataset artifact or object at {key!r}", field=field_name) from None
        return False
    if RECORDS_FILE not in manifest.files:
        raise InvalidInput(f"artifact {key!r} has no {RECORDS_FILE} (files: {', '.join(sorted(manifest.files))})",
                           field=field_name)
    return True


def _fetch(store: ArtifactStore, key: str, field_name: str) -> tuple[bytes, str]:
    if check_dataset(store, key, field_name):
        return read_file(store, key, RECORDS_FILE), f"{key}/{RECORDS_FILE}"
    return store.get_bytes(key), key


def fetch_dataset(store: ArtifactStore, key: str, field_name: str = "dataset_artifact") -> bytes:
    """The records file of a dataset artifact (sha256-verified) or a plain JSONL object, as bytes."""
    return _fetch(store, key, field_name)[0]


def load_dataset(store: ArtifactStore, key: str,
                 field_name: str = "dataset_artifact") -> tuple[list[Record], ReadReport]:
    """The records at ``key`` (:func:`fetch_dataset`), bad lines reported against ``<key>/records.jsonl`` or
    ``key``."""
    return read_dataset(*_fetch(store, key, field_name))


def _has_utf8_text(line: bytes) -> bool:
    try:
        return not line.isascii() and bool(line.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def decode_dataset(data: bytes, source: str) -> tuple[str, list[LineError]]:
    """The file's text. A file wholly in UTF-8 or GBK decodes as such; in a UTF-8 file, lines that are not
    UTF-8 are blanked (line numbers stay right) and reported instead of failing the whole file."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return body.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines = body.split(b"\n")
    if not any(_has_utf8_text(line) for line in lines):
        return decode_bytes(data, source), []  # one legacy encoding throughout (GBK), or refused as a whole
    errors, text_lines = [], []
    for number, line in enumerate(lines, start=1):
        try:
            text_lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            errors.append(LineError(source, number, f"line is not UTF-8 (invalid byte 0x{line[exc.start]:02x} at "
                                                    f"byte {exc.start}; the rest of the file is UTF-8): re-save it"))
            text_lines.append("")
    return "\n".join(text_lines), errors


def read_dataset(data: bytes, source: str, fmt: DatasetFormat = "emotune",
                 style: str | None = None) -> tuple[list[Record], ReadReport]:
    """Records of a dataset file (any format of :mod:`emotune.data.formats`); bad lines go to the report."""
    text, encoding_errors = decode_dataset(data, source)
    records, report = parse_dataset(text, fmt, source=source, style=style)
    report.errors = sorted([*encoding_errors, *report.errors], key=lambda e: e.line)
    return records, report
