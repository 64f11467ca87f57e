"""Issue 29, low: a question source in the store that is a zip bomb (a ChatGPT export whose conversations.json
inflates far beyond its size) is refused by its declared size, unread, with an error naming the limit; before, the
whole member was inflated into memory. Real zip archives, datagen's loader on a real local store."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from emotune.data.importers import import_questions
from emotune.errors import InvalidInput
from emotune.services.datagen.questions import load_questions
from emotune.services.datagen.spec import QuestionSourceSpec
from emotune.store.local import LocalStore

MIB = 1024 * 1024
CONVERSATION = ('{"title": "t", "current_node": "b", "mapping": {'
                '"a": {"message": {"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["How was your day?"]}}, '
                '"parent": null}, "b": {"message": {"author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["Fine"]}}, '
                '"parent": "a"}}}')


def _export(padding: int) -> bytes:
    """A ChatGPT export zip whose conversations.json is one conversation and ``padding`` spaces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/conversations.json", "[" + CONVERSATION + " " * padding + "]")
    return buffer.getvalue()


def test_a_zip_bomb_in_the_store_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTUNE_IMPORT_MAX_ZIP_MEMBER_BYTES", str(4 * MIB))
    store = LocalStore(tmp_path / "store")
    bomb = _export(64 * MIB)
    assert len(bomb) < MIB // 4  # 64 MiB inflated from a few dozen KiB
    store.put_bytes("inputs/bomb/export.zip", bomb)
    store.put_bytes("inputs/fine/export.zip", _export(1000))

    with pytest.raises(InvalidInput) as refused:
        load_questions(store, QuestionSourceSpec(artifact_key="inputs/bomb/export.zip", format="chatgpt"))
    assert "over the 4194304 byte limit (EMOTUNE_IMPORT_MAX_ZIP_MEMBER_BYTES)" in refused.value.message
    assert "zip bomb" in refused.value.message and "conversations.json" in refused.value.message

    fine = load_questions(store, QuestionSourceSpec(artifact_key="inputs/fine/export.zip", format="chatgpt"))
    assert fine.questions == ["How was your day?"]


def test_a_member_that_inflates_past_its_declared_size_is_cut_off(tmp_path: Path) -> None:
    """A forged header (small declared size) does not get past the cap either: zipfile stops at the declared
    size and the archive is then refused as unreadable."""
    data = bytearray(_export(2 * MIB))
    declared = int.from_bytes(data[22:26], "little")  # local header: uncompressed size
    forged = (1000).to_bytes(4, "little")
    data[22:26] = forged
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = forged  # central directory: uncompressed size
    assert declared > 2 * MIB
    path = tmp_path / "forged.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInput) as refused:
        import_questions(path, "chatgpt", max_zip_member_bytes=MIB)
    assert "zip" in refused.value.message
