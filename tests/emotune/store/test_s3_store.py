"""What only the S3 backend has: bucket creation, credentials, unreachable endpoints, multipart, object metadata."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from minio import Minio
from pydantic import SecretStr

from emotune.errors import FailedPrecondition, InvalidInput, NotFound, Unavailable
from emotune.settings import Settings
from emotune.store import open_store
from emotune.store.s3 import PART_SIZE, SHA256_META, S3Store

pytestmark = pytest.mark.s3


def test_open_store_creates_the_bucket_in_the_configured_region(s3_server):
    settings = s3_server.settings()
    store = open_store(settings)
    assert isinstance(store, S3Store) and store.backend == "s3"
    assert store.client.bucket_exists(settings.s3_bucket)
    assert store.client._get_region(settings.s3_bucket) == "us-east-1"
    # a second start finds the bucket and keeps its objects
    store.put_bytes("kept", b"1")
    assert open_store(settings).get_bytes("kept") == b"1"


def test_sha256_is_object_metadata_written_with_the_object(s3_store):
    info = s3_store.put_bytes("meta/check", b"hello")
    raw = s3_store.client.stat_object(s3_store.bucket, "meta/check")
    assert raw.metadata[SHA256_META] == info.sha256 == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")


@pytest.mark.slow
def test_large_uploads_go_multipart_in_10mib_parts(s3_store):
    data = os.urandom(25 * 1024 * 1024)
    s3_store.put_stream("multi/stream", io.BytesIO(data))  # unknown length
    s3_store.put_bytes("multi/bytes", data)
    for key in ("multi/stream", "multi/bytes"):
        etag = s3_store.client.stat_object(s3_store.bucket, key).etag
        assert etag.endswith("-3"), (key, etag)  # 10 + 10 + 5 MiB
    assert PART_SIZE == 10 * 1024 * 1024
    assert s3_store.get_bytes("multi/stream") == data


@pytest.mark.parametrize(
    ("access_key", "secret_key"),
    [("test:tester", "wrong-secret"), ("nobody:here", "testing123")],
    ids=["wrong-secret", "unknown-user"],
)
def test_wrong_credentials_are_refused_at_start_with_a_clear_error(s3_server, access_key, secret_key):
    settings = s3_server.settings(s3_access_key=SecretStr(access_key), s3_secret_key=SecretStr(secret_key))
    with pytest.raises(FailedPrecondition) as info:
        S3Store.from_settings(settings)
    message = info.value.message
    assert s3_server.endpoint in message and "credentials" in message and "EMOTUNE_S3_SECRET_KEY" in message
    assert secret_key not in message
    assert info.value.details["endpoint"] == s3_server.endpoint


def test_credentials_rotated_after_start_fail_every_call(s3_store, s3_server):
    s3_store.put_bytes("x", b"1")
    client = Minio(s3_server.endpoint, access_key=s3_server.access_key, secret_key="rotated-away", secure=False,
                   region=s3_server.region)
    bad = S3Store(client, s3_store.bucket, s3_server.endpoint)
    for call in (lambda: bad.get_bytes("x"), lambda: bad.stat("x"), lambda: list(bad.list()),
                 lambda: bad.put_bytes("y", b"2")):
        with pytest.raises(FailedPrecondition, match="refused the configured credentials"):
            call()


def test_unreachable_endpoint_is_unavailable_quickly():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(store_backend="s3", s3_endpoint=endpoint, s3_bucket="any")
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        S3Store.from_settings(settings)
    assert endpoint in info.value.message and "unreachable" in info.value.message
    assert time.monotonic() - started < 10


class _AlwaysUnavailable(BaseHTTPRequestHandler):
    """An S3 endpoint that is up but answers every request as an overloaded server does."""

    def _unavailable(self) -> None:
        body = b"<Error><Code>ServiceUnavailable</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = _unavailable

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_answering_5xx_on_every_retry_is_unavailable_and_says_so():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysUnavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(Unavailable) as info:
            S3Store.from_settings(Settings(store_backend="s3", s3_endpoint=endpoint, s3_bucket="any"))
    finally:
        server.shutdown()
        server.server_close()
    assert endpoint in info.value.message and "503" in info.value.message
    assert "unreachable" not in info.value.message, info.value.message


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "127.0.0.1:9000/bucket"])
def test_a_malformed_endpoint_names_the_setting(endpoint):
    with pytest.raises(InvalidInput) as info:
        S3Store.from_settings(Settings(store_backend="s3", s3_endpoint=endpoint))
    assert info.value.field == "s3_endpoint" and endpoint in info.value.message


def test_missing_bucket_after_start_is_not_found_naming_the_bucket(s3_store):
    s3_store.client.remove_bucket(s3_store.bucket)
    with pytest.raises(NotFound, match=f"bucket '{s3_store.bucket}'"):
        s3_store.get_bytes("anything")


def test_tampered_presigned_url_is_forbidden(s3_store):
    s3_store.put_bytes("share/a.txt", b"a")
    s3_store.put_bytes("share/b.txt", b"b")
    url = s3_store.presigned_url("share/a.txt", expires=timedelta(minutes=5))
    assert httpx.get(url).content == b"a"
    assert httpx.get(url.replace("share/a.txt", "share/b.txt")).status_code == 403
    signature = url.rsplit("X-Amz-Signature=", 1)[1]
    forged = url.replace(signature, signature[::-1])
    assert httpx.get(forged).status_code == 403


def test_presigned_url_expires(s3_store):
    s3_store.put_bytes("share/soon.txt", b"soon")
    signed_at = time.monotonic()
    # X-Amz-Date has whole seconds, so the URL lives between 2 and 3 s
    url = s3_store.presigned_url("share/soon.txt", expires=timedelta(seconds=3))
    assert httpx.get(url).status_code == 200
    time.sleep(max(0.0, signed_at + 4 - time.monotonic()))
    assert httpx.get(url).status_code == 403
