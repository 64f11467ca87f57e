"""Multi-file artifacts on both backends: publish, verify, immutability, and crashes between data and manifest."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from emotune.errors import AlreadyExists, CorruptArtifact, InvalidInput, NotFound
from emotune.store.artifacts import (
    ArtifactFile,
    content_digest,
    delete_artifact,
    digest_of,
    download_artifact,
    file_key,
    list_artifacts,
    manifest_key,
    open_file,
    publish_artifact,
    read_file,
    read_manifest,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def adapter_files(tmp_path):
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(os.urandom(300_000))
    return {
        "adapter_config.json": b'{"r": 8, "lora_alpha": 16}',
        "adapter_model.safetensors": weights,
        "tokenizer/chat_template.jinja": b"{{ messages }}",
    }


def test_publish_read_and_download(any_store, adapter_files, tmp_path):
    manifest = publish_artifact(any_store, "models/tender-v1", adapter_files, {"base": "gemma3-270m", "step": 40})
    weights = adapter_files["adapter_model.safetensors"].read_bytes()
    assert manifest.key_prefix == "models/tender-v1"
    assert manifest.files["adapter_model.safetensors"] == ArtifactFile(sha256=sha(weights), size=len(weights))
    assert manifest.metadata == {"base": "gemma3-270m", "step": 40}
    assert manifest.digest == content_digest(adapter_files) == digest_of(manifest.files)
    assert read_manifest(any_store, "models/tender-v1") == manifest
    assert read_manifest(any_store, "models/tender-v1/") == manifest  # a trailing slash is the same prefix
    keys = [i.key for i in any_store.list("models/tender-v1/")]
    assert keys == sorted([manifest_key("models/tender-v1")]
                          + [file_key("models/tender-v1", n) for n in adapter_files])

    out = download_artifact(any_store, "models/tender-v1", tmp_path / "dl")
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    assert (out / "tokenizer" / "chat_template.jinja").read_text() == "{{ messages }}"
    assert read_file(any_store, "models/tender-v1", "adapter_config.json") == b'{"r": 8, "lora_alpha": 16}'
    with open_file(any_store, "models/tender-v1", "adapter_model.safetensors") as fh:
        assert fh.read() == weights


def test_the_digest_is_a_content_address(any_store):
    one = publish_artifact(any_store, "datasets/a", {"x.jsonl": b"1\n", "y.jsonl": b"2\n"})
    same = publish_artifact(any_store, "datasets/b", {"y.jsonl": b"2\n", "x.jsonl": b"1\n"})
    renamed = publish_artifact(any_store, "datasets/c", {"z.jsonl": b"1\n", "y.jsonl": b"2\n"})
    changed = publish_artifact(any_store, "datasets/d", {"x.jsonl": b"1\n", "y.jsonl": b"3\n"})
    assert one.digest == same.digest
    assert len({one.digest, renamed.digest, changed.digest}) == 3


def test_published_artifacts_are_immutable(any_store):
    first = publish_artifact(any_store, "reports/r1", {"report.json": b"{}"}, {"n": 1})
    again = publish_artifact(any_store, "reports/r1", {"report.json": b"{}"}, {"n": 1})
    assert again == first  # identical: a no-op that returns the original
    with pytest.raises(AlreadyExists, match="different content"):
        publish_artifact(any_store, "reports/r1", {"report.json": b"{ }"}, {"n": 1})
    with pytest.raises(AlreadyExists, match="different content"):
        publish_artifact(any_store, "reports/r1", {"report.json": b"{}", "extra.txt": b""}, {"n": 1})
    with pytest.raises(AlreadyExists, match="different metadata"):
        publish_artifact(any_store, "reports/r1", {"report.json": b"{}"}, {"n": 2})
    assert read_file(any_store, "reports/r1", "report.json") == b"{}"


CRASHING_PUBLISHER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from emotune.settings import Settings
    from emotune.store import open_store
    from emotune.store.artifacts import MANIFEST_NAME, publish_artifact

    store = open_store(Settings())
    write = store.put_bytes

    def put_bytes(key, data, *args, **kwargs):
        if key.endswith("/" + MANIFEST_NAME):  # the data is written; die before the manifest
            os.kill(os.getpid(), signal.SIGKILL)
        return write(key, data, *args, **kwargs)

    store.put_bytes = put_bytes
    publish_artifact(store, sys.argv[1], {"old-name.bin": b"A" * 5000, "data.jsonl": Path(sys.argv[2])}, {})
""")


def test_crash_between_data_and_manifest_leaves_no_visible_artifact(any_store, store_env, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"q": "hi"}\n' * 100)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_PUBLISHER, "datasets/run-7", str(data)],
        env={**os.environ, **store_env}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the data objects are there, but nothing shows them as an artifact
    assert any_store.exists(file_key("datasets/run-7", "data.jsonl"))
    with pytest.raises(NotFound, match="no artifact published at 'datasets/run-7'"):
        read_manifest(any_store, "datasets/run-7")
    assert list_artifacts(any_store, "datasets/") == []
    with pytest.raises(NotFound):
        download_artifact(any_store, "datasets/run-7", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()

    # publishing again completes, and drops the orphan the crashed attempt left
    manifest = publish_artifact(any_store, "datasets/run-7", {"data.jsonl": data}, {"attempt": 2})
    assert [m.key_prefix for m in list_artifacts(any_store, "datasets/")] == ["datasets/run-7"]
    assert set(manifest.files) == {"data.jsonl"}
    assert not any_store.exists(file_key("datasets/run-7", "old-name.bin"))


def test_list_artifacts_only_published_ones_in_key_order(any_store):
    publish_artifact(any_store, "models/b", {"w": b"b"})
    publish_artifact(any_store, "models/a", {"w": b"a", "MANIFEST.json": b"a data file, not a manifest"})
    any_store.put_bytes(file_key("models/c", "w"), b"unpublished")
    publish_artifact(any_store, "other/x", {"w": b"x"})
    assert [m.key_prefix for m in list_artifacts(any_store, "models/")] == ["models/a", "models/b"]
    assert [m.key_prefix for m in list_artifacts(any_store)] == ["models/a", "models/b", "other/x"]


def test_corrupted_data_is_detected_on_every_read_path(any_store, tmp_path):
    publish_artifact(any_store, "models/m", {"weights.bin": b"\x00" * 4096, "config.json": b"{}"})
    any_store.put_bytes(file_key("models/m", "weights.bin"), b"\x00" * 4095 + b"\x01")  # bit rot / tampering
    with pytest.raises(CorruptArtifact, match="models/m/files/weights.bin: content does not match"):
        download_artifact(any_store, "models/m", tmp_path / "dl")
    assert not (tmp_path / "dl" / "weights.bin").exists()
    assert [p.name for p in (tmp_path / "dl").rglob("*") if p.name.endswith(".part")] == []
    with pytest.raises(CorruptArtifact):
        read_file(any_store, "models/m", "weights.bin")
    assert read_file(any_store, "models/m", "config.json") == b"{}"  # intact files still read


def test_a_tampered_manifest_is_refused(any_store, tmp_path):
    publish_artifact(any_store, "models/t", {"w": b"w"})
    doc = json.loads(any_store.get_bytes(manifest_key("models/t")))
    doc["files"]["w"]["sha256"] = "0" * 64  # digest no longer matches the file list
    any_store.put_bytes(manifest_key("models/t"), json.dumps(doc).encode())
    with pytest.raises(CorruptArtifact, match="digest does not match"):
        read_manifest(any_store, "models/t")

    evil = {"../../outside": ArtifactFile(sha256=sha(b"w"), size=1)}
    doc.update(files={k: v.model_dump() for k, v in evil.items()}, digest=digest_of(evil))
    any_store.put_bytes(manifest_key("models/t"), json.dumps(doc).encode())
    with pytest.raises(CorruptArtifact, match="outside its folder"):
        download_artifact(any_store, "models/t", tmp_path / "dl" / "inner")
    assert not (tmp_path / "outside").exists()

    any_store.put_bytes(manifest_key("models/t"), b"{not json")
    with pytest.raises(CorruptArtifact, match="unreadable"):
        read_manifest(any_store, "models/t")


def test_download_keeps_intact_local_files_and_repairs_changed_ones(any_store, tmp_path):
    publish_artifact(any_store, "models/cache", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    dest = download_artifact(any_store, "models/cache", tmp_path / "cache")
    (dest / "b.bin").write_bytes(b"edited locally")
    a_mtime = (dest / "a.bin").stat().st_mtime_ns
    download_artifact(any_store, "models/cache", dest)
    assert (dest / "b.bin").read_bytes() == b"b" * 1000
    assert (dest / "a.bin").stat().st_mtime_ns == a_mtime  # not downloaded again


def test_an_artifact_copied_elsewhere_reads_its_own_files(any_store, tmp_path):
    publish_artifact(any_store, "staging/m", {"w": b"weights"})
    for info in list(any_store.list("staging/m/")):
        any_store.put_bytes("prod/m/" + info.key[len("staging/m/"):], any_store.get_bytes(info.key))
    delete_artifact(any_store, "staging/m")
    assert read_manifest(any_store, "prod/m").key_prefix == "prod/m"
    assert read_file(any_store, "prod/m", "w") == b"weights"


def test_delete_artifact_unpublishes_then_removes_data(any_store):
    publish_artifact(any_store, "tmp/art", {"a": b"1", "b/c": b"2"})
    assert delete_artifact(any_store, "tmp/art") == 3
    assert list(any_store.list("tmp/")) == []
    with pytest.raises(NotFound):
        read_manifest(any_store, "tmp/art")


def test_missing_file_in_artifact_is_not_found(any_store):
    publish_artifact(any_store, "models/n", {"w": b"1"})
    with pytest.raises(NotFound, match=r"has no file 'x' \(files: w\)"):
        open_file(any_store, "models/n", "x")


def test_bad_inputs_name_the_field(any_store, tmp_path):
    cases = [
        ({}, {}, "files", "at least one file"),
        ({"a.txt": "text, not bytes"}, {}, "files.a.txt", "must be bytes or a pathlib.Path, got str"),
        ({"gone": tmp_path / "missing.bin"}, {}, "files.gone", "is not a file"),
        ({"a": b"1"}, {"when": object()}, "metadata", "JSON-serializable"),
    ]
    for files, metadata, field, message in cases:
        with pytest.raises(InvalidInput) as info:
            publish_artifact(any_store, "bad/x", files, metadata)
        assert info.value.field == field and message in info.value.message, (field, info.value.message)
    for name in ("../escape", "/abs", "a//b"):
        with pytest.raises(InvalidInput):
            publish_artifact(any_store, "bad/x", {name: b"1"})
    with pytest.raises(InvalidInput):
        publish_artifact(any_store, "../bad", {"a": b"1"})
    assert list(any_store.list()) == []
