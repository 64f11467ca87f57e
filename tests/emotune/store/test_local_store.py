"""What only the local-directory backend has: on-disk layout, visibility by metadata, folder/object collisions."""

from __future__ import annotations

import io

import pytest

from emotune.errors import FailedPrecondition, NotFound
from emotune.settings import Settings
from emotune.store import open_store
from emotune.store.local import LocalStore


def test_open_store_defaults_to_the_local_directory(tmp_path):
    store = open_store(Settings(store_path=tmp_path / "s"))
    assert isinstance(store, LocalStore) and store.backend == "local"
    store.put_bytes("a/b.txt", b"x")
    assert (tmp_path / "s" / "objects" / "a" / "b.txt").read_bytes() == b"x"


def test_data_without_metadata_is_invisible(local_store):
    """A writer killed between the data rename and the metadata rename leaves no visible object."""
    orphan = local_store.root / "objects" / "half" / "written.bin"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    assert not local_store.exists("half/written.bin")
    assert list(local_store.list("half/")) == []
    with pytest.raises(NotFound):
        local_store.get_bytes("half/written.bin")
    local_store.put_bytes("half/written.bin", b"complete")  # a retry completes normally
    assert local_store.get_bytes("half/written.bin") == b"complete"


def test_failed_writes_leave_no_temporary_files(local_store):
    local_store.put_bytes("ok", b"1")
    with pytest.raises(FailedPrecondition):
        local_store.put_stream("short", io.BytesIO(b"ab"), length=5)
    assert list((local_store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a")])
def test_a_key_cannot_also_be_a_folder(local_store, first, second):
    local_store.put_bytes(first, b"first")
    with pytest.raises(FailedPrecondition, match=f"object key '{second}' collides"):
        local_store.put_bytes(second, b"second")
    assert [i.key for i in local_store.list()] == [first]
    assert local_store.get_bytes(first) == b"first"


def test_delete_removes_emptied_folders(local_store):
    local_store.put_bytes("deep/er/key", b"x")
    local_store.delete("deep/er/key")
    assert not (local_store.root / "objects" / "deep").exists()
    assert not (local_store.root / "meta" / "deep").exists()
    local_store.delete("deep")  # neither object nor folder: fine


def test_deleting_a_folder_name_is_a_no_op(local_store):
    local_store.put_bytes("dir/x", b"x")
    local_store.delete("dir")
    assert local_store.get_bytes("dir/x") == b"x"
