"""The ArtifactStore contract, run unchanged against the local directory and a real S3 server (Swift s3api)."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx
import pytest

from emotune.errors import FailedPrecondition, InvalidInput, NotFound

MB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OneWayStream(io.RawIOBase):
    """A pipe-like stream: no length, no seek, short reads (like a socket or an HTTP request body)."""

    def __init__(self, data: bytes, read_size: int = 64 * 1024) -> None:
        self._data, self._pos, self._read_size = memoryview(data), 0, read_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._read_size, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


def fetch(url: str) -> httpx.Response | bytes:
    """GET a presigned URL like a client without credentials would (file:// for the local store)."""
    if url.startswith("file://"):
        return Path(url2pathname(urlsplit(url).path)).read_bytes()
    return httpx.get(url, timeout=30)


def test_small_object_round_trip(any_store):
    data = os.urandom(1024)
    info = any_store.put_bytes("runs/r1/small.bin", data)
    assert (info.key, info.size, info.sha256) == ("runs/r1/small.bin", 1024, sha(data))
    assert any_store.get_bytes("runs/r1/small.bin") == data
    stat = any_store.stat("runs/r1/small.bin")
    assert (stat.size, stat.sha256) == (1024, sha(data))
    assert stat.last_modified is not None and stat.last_modified.tzinfo is not None
    assert any_store.exists("runs/r1/small.bin") and not any_store.exists("runs/r1/other.bin")
    with any_store.open("runs/r1/small.bin") as fh:
        assert fh.read(10) == data[:10] and fh.read() == data[10:]


def test_text_and_unicode_keys(any_store):
    any_store.put_text("styles/温柔/说明.txt", "轻声细语 ✿")
    assert any_store.get_text("styles/温柔/说明.txt") == "轻声细语 ✿"
    assert [i.key for i in any_store.list("styles/")] == ["styles/温柔/说明.txt"]


def test_empty_object(any_store):
    info = any_store.put_bytes("empty", b"")
    assert (info.size, info.sha256) == (0, sha(b""))
    assert any_store.get_bytes("empty") == b""


def test_overwrite_replaces_content_and_sha(any_store):
    any_store.put_bytes("k", b"old")
    info = any_store.put_bytes("k", b"new content")
    assert info.sha256 == sha(b"new content")
    assert any_store.get_bytes("k") == b"new content"
    assert any_store.stat("k").size == len(b"new content")


@pytest.mark.slow
def test_60mb_round_trips_bytes_file_and_unknown_length_stream(any_store, tmp_path):
    data = os.urandom(60 * MB)
    expected = sha(data)
    source = tmp_path / "big.bin"
    source.write_bytes(data)

    assert any_store.put_bytes("big/bytes", data).sha256 == expected
    assert any_store.put_file("big/file", source).sha256 == expected
    assert any_store.put_stream("big/stream", OneWayStream(data)).sha256 == expected  # length unknown

    for key in ("big/bytes", "big/file", "big/stream"):
        stat = any_store.stat(key)
        assert (stat.size, stat.sha256) == (60 * MB, expected), key
    # read back three ways: whole, streamed in chunks, to a file
    assert sha(any_store.get_bytes("big/bytes")) == expected
    digest = hashlib.sha256()
    with any_store.open("big/stream") as fh:
        while block := fh.read(3 * MB + 7):
            digest.update(block)
    assert digest.hexdigest() == expected
    target = any_store.get_file("big/file", tmp_path / "out" / "big.bin")
    assert sha(target.read_bytes()) == expected
    assert not list((tmp_path / "out").glob("*.part"))


def test_stream_with_length_stores_exactly_that_many_bytes(any_store):
    info = any_store.put_stream("part", io.BytesIO(b"0123456789"), length=4)
    assert (info.size, any_store.get_bytes("part")) == (4, b"0123")
    info = any_store.put_stream("part-oneway", OneWayStream(b"abcdefgh", read_size=3), length=5)
    assert any_store.get_bytes("part-oneway") == b"abcde" and info.sha256 == sha(b"abcde")


def test_truncated_stream_is_refused_and_stores_nothing(any_store):
    with pytest.raises(FailedPrecondition, match="ended after 3 of 10 bytes"):
        any_store.put_stream("truncated", OneWayStream(b"abc"), length=10)
    assert not any_store.exists("truncated")
    assert list(any_store.list("truncated")) == []


def test_list_by_prefix_in_key_order(any_store):
    keys = ["data/b.jsonl", "data/a.jsonl", "data/sub/z.bin", "data-other/x", "dat", "data/中.txt", "zzz"]
    for key in keys:
        any_store.put_bytes(key, key.encode())
    listed = list(any_store.list("data/"))
    assert [i.key for i in listed] == ["data/a.jsonl", "data/b.jsonl", "data/sub/z.bin", "data/中.txt"]
    assert [i.size for i in listed] == [len(k.encode()) for k in (i.key for i in listed)]
    assert all(i.sha256 is None for i in listed)  # listings carry no sha256 on either backend: use stat()
    # a prefix need not end at a folder boundary; order is by UTF-8 bytes ("-" < "/")
    assert [i.key for i in any_store.list("data")] == [
        "data-other/x", "data/a.jsonl", "data/b.jsonl", "data/sub/z.bin", "data/中.txt"]
    assert [i.key for i in any_store.list()] == sorted(keys, key=lambda k: k.encode())
    assert list(any_store.list("nothing/")) == []


def test_list_start_after_returns_only_later_keys(any_store):
    for n in range(1, 6):
        any_store.put_bytes(f"events/{n:04d}.json", b"{}")
    after = [i.key for i in any_store.list("events/", start_after="events/0003.json")]
    assert after == ["events/0004.json", "events/0005.json"]
    assert list(any_store.list("events/", start_after="events/0005.json")) == []


def test_missing_objects_raise_not_found(any_store):
    for call in (
        lambda: any_store.get_bytes("missing/key"),
        lambda: any_store.open("missing/key"),
        lambda: any_store.stat("missing/key"),
        lambda: any_store.presigned_url("missing/key"),
    ):
        with pytest.raises(NotFound, match="missing/key"):
            call()


def test_delete_and_delete_prefix(any_store):
    for key in ("tmp/a", "tmp/b/c", "tmp/b/d", "keep/x"):
        any_store.put_bytes(key, b"x")
    any_store.delete("tmp/a")
    any_store.delete("tmp/a")  # deleting a missing object is fine
    any_store.delete("never/existed")
    assert not any_store.exists("tmp/a")
    assert any_store.delete_prefix("tmp/") == 2
    assert [i.key for i in any_store.list()] == ["keep/x"]
    # a key used as a folder before can become an object once the folder is empty
    any_store.put_bytes("tmp/b", b"now an object")
    assert any_store.get_bytes("tmp/b") == b"now an object"


def test_presigned_get(any_store):
    any_store.put_bytes("share/report.json", b'{"ok": true}')
    url = any_store.presigned_url("share/report.json", expires=timedelta(minutes=5))
    got = fetch(url)
    body = got if isinstance(got, bytes) else got.raise_for_status().content
    assert body == b'{"ok": true}'


BAD_KEYS = [
    ("../escape", "'..'"),
    ("a/../../etc/passwd", "'..'"),
    ("/etc/passwd", "absolute"),
    ("a//b", "empty"),
    ("./a", "'.'"),
    ("line\nbreak", "control character"),
    ("nul\x00byte", "control character"),
    ("tab\there", "control character"),
    ("back\\slash", "backslash"),
    ("", "empty"),
    ("x" * 1025, "longer than 1024 bytes"),
]


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS, ids=[repr(k[:12]) for k, _ in BAD_KEYS])
def test_bad_keys_are_refused_by_every_method(any_store, key, reason, tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls = {
        "put_bytes": lambda: any_store.put_bytes(key, b"x"),
        "put_stream": lambda: any_store.put_stream(key, io.BytesIO(b"x")),
        "put_file": lambda: any_store.put_file(key, source),
        "get_bytes": lambda: any_store.get_bytes(key),
        "open": lambda: any_store.open(key),
        "stat": lambda: any_store.stat(key),
        "delete": lambda: any_store.delete(key),
        "presigned_url": lambda: any_store.presigned_url(key),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field == "key" and reason in info.value.message, name
    assert list(any_store.list()) == []


def test_list_refuses_bad_prefixes(any_store):
    for prefix in ("../", "/abs/", "a\x01/"):
        with pytest.raises(InvalidInput):
            list(any_store.list(prefix))
