"""S3 / MinIO backend through the ``minio`` SDK, with the same behaviour as :class:`LocalStore`.

- The content sha256 is stored as object metadata (``x-amz-meta-sha256``) in the same request that creates the
  object, so no reader ever sees an object without it. S3 cannot add metadata to a finished upload without a
  copy, hence the sha256 must be known before the upload starts: ``put_file`` hashes the file first, and a
  stream that cannot be rewound is spooled to a temporary file while it is hashed (memory stays bounded).
  Uploads larger than one part go multipart in 10 MiB parts.
- Errors: a missing key or bucket is :class:`NotFound`; credentials the server refuses are
  :class:`FailedPrecondition` (a configuration mistake that retrying cannot fix, raised at start-up because
  :meth:`S3Store.from_settings` checks the bucket); an unreachable server or 5xx is :class:`Unavailable`
  (transient). Every message names the endpoint and bucket, never the keys.
- Listings carry no user metadata on S3, so ``list()`` reports ``sha256=None``; ``stat()`` has the value.
- Conditional writes (``If-None-Match: *``, ``If-Match``) are probed once per store, on first use of
  ``conditional_writes``: a probe object is created, created again (must be refused with 412), replaced with a
  wrong etag (refused) and with the right one (accepted), then deleted. A server that ignores the headers or
  answers them with an S3 error (Swift's s3api: 501 NotImplemented) counts as without; an unreachable server
  raises rather than be taken as one without (every process sharing a bucket must reach the same answer). A conditional PUT the client retried after its first attempt
  landed is refused by the server (412) although it was ours: the object is read back and a byte-identical
  content counts as written.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from emotune.errors import EmotuneError, FailedPrecondition, InvalidInput, NotFound, Unavailable
from emotune.logging import get_logger
from emotune.settings import Settings
from emotune.store.base import CHUNK, ArtifactStore, ConditionFailed, ObjectInfo, copy_hashed
from emotune.store.keys import validate_key

PART_SIZE = 10 * 1024 * 1024
SHA256_META = "x-amz-meta-sha256"
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"})
_AUTH_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
     "AuthorizationHeaderMalformed", "InvalidSecurity"}
)
_CONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
PROBE_PREFIX = "_emotune/probe/"
T = TypeVar("T")
log = get_logger(__name__)


def _http_client(timeout_seconds: float) -> urllib3.PoolManager:
    """Connection pool with a bounded retry budget: a down server fails in about a second, not after minutes.

    TLS is verified against ``SSL_CERT_FILE`` if set (e.g. a private CA for MinIO), else certifi's bundle,
    exactly as the minio SDK's own default client does.
    """
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout_seconds, 10.0), read=timeout_seconds),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, connect=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class _ObjectStream(io.RawIOBase):
    """A GET response as a raw stream; closing it returns the connection to the pool."""

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str) -> None:
        self._response, self._where = response, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._response.read(len(buffer))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"reading {self._where} failed: {type(exc).__name__}") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3Store(ArtifactStore):
    backend = "s3"

    def __init__(self, client: Minio, bucket: str, endpoint: str) -> None:
        self.client, self.bucket, self.endpoint = client, bucket, endpoint
        self._conditional: bool | None = None
        self._probe_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_seconds: float = 300.0) -> S3Store:
        """Connect, verify the credentials and create the bucket (in the configured region) if it is missing."""
        try:
            client = Minio(
                settings.s3_endpoint,
                access_key=settings.s3_access_key.get_secret_value(),
                secret_key=settings.s3_secret_key.get_secret_value(),
                secure=settings.s3_secure,
                region=settings.s3_region,
                http_client=_http_client(timeout_seconds),
            )
        except ValueError as exc:  # e.g. "http://host:9000" or a path: the SDK wants host:port
            raise InvalidInput(
                f"{settings.s3_endpoint!r} is not a valid S3 endpoint ({exc}); use host:port and "
                "EMOTUNE_S3_SECURE for TLS", field="s3_endpoint",
            ) from None
        store = cls(client, settings.s3_bucket, settings.s3_endpoint)
        store._ensure_bucket(settings.s3_region)
        return store

    def _ensure_bucket(self, region: str) -> None:
        """Create the bucket if it is missing. Services starting together on a new bucket race here: the losers'
        create answers BucketAlreadyOwnedByYou (the bucket is there, ours), which is success."""
        if not self._call("", lambda: self.client.bucket_exists(self.bucket)):
            try:
                self._call("", lambda: self.client.make_bucket(self.bucket, location=region))
            except Unavailable as exc:
                if exc.details.get("code") != "BucketAlreadyOwnedByYou":
                    raise

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key} at {self.endpoint}"

    def _call(self, key: str, operation: Callable[[], T]) -> T:
        """Run one SDK call and translate its failures into domain errors."""
        try:
            return operation()
        except S3Error as exc:
            raise self._translate(key, exc) from None
        except (ServerError, InvalidResponseError) as exc:
            raise Unavailable(f"S3 server error for {self._where(key)}: {exc}", endpoint=self.endpoint) from None
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.ResponseError):  # every retry answered 5xx
                raise Unavailable(
                    f"S3 server error for {self._where(key)}: {exc.reason}", endpoint=self.endpoint
                ) from None
            raise Unavailable(
                f"S3 endpoint {self.endpoint} unreachable: {type(exc.reason).__name__}", endpoint=self.endpoint
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(
                f"S3 endpoint {self.endpoint} unreachable: {type(exc).__name__}", endpoint=self.endpoint
            ) from None
        except MinioException as exc:
            raise Unavailable(f"S3 call failed for {self._where(key)}: {exc}", endpoint=self.endpoint) from None

    def _translate(self, key: str, exc: S3Error) -> EmotuneError:
        if exc.code in _CONDITION_CODES:
            return ConditionFailed(f"conditional write refused for {self._where(key)} ({exc.code})", key=key,
                                   code=exc.code, http_status=exc.response.status if exc.response else 412)
        if exc.code in _NOT_FOUND_CODES:
            what = f"bucket {self.bucket!r} at {self.endpoint}" if exc.code == "NoSuchBucket" else f"object {key!r}"
            return NotFound(f"{what} not found", key=key, code=exc.code)
        if exc.code in _AUTH_CODES:
            return FailedPrecondition(
                f"S3 endpoint {self.endpoint} refused the configured credentials for bucket {self.bucket!r} "
                f"({exc.code}): check EMOTUNE_S3_ACCESS_KEY / EMOTUNE_S3_SECRET_KEY",
                endpoint=self.endpoint, code=exc.code,
            )
        return Unavailable(f"S3 error {exc.code} for {self._where(key)}: {exc.message}",
                           endpoint=self.endpoint, code=exc.code)

    # writes
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        return self._upload(key, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), content_type)

    def put_file(self, key: str, path: str | Path, content_type: str = "application/octet-stream") -> ObjectInfo:
        validate_key(key)
        with Path(path).open("rb") as fh:
            return self.put_stream(key, fh, Path(path).stat().st_size, content_type)

    def put_stream(
        self, key: str, stream: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        validate_key(key)
        with _hashed(key, stream, length) as (source, digest, size):
            return self._upload(key, source, size, digest, content_type)

    def _upload(self, key: str, data: BinaryIO, size: int, sha256: str, content_type: str) -> ObjectInfo:
        validate_key(key)
        self._call(key, lambda: self.client.put_object(
            self.bucket, key, data, size, content_type=content_type, metadata={SHA256_META: sha256},
            part_size=PART_SIZE,
        ))
        return self.stat(key)

    # reads
    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        validate_key(key)
        response = self._call(key, lambda: self.client.get_object(self.bucket, key))
        return io.BufferedReader(_ObjectStream(response, self._where(key)), CHUNK)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        info = self._call(key, lambda: self.client.stat_object(self.bucket, key))
        return ObjectInfo(key, info.size or 0, (info.metadata or {}).get(SHA256_META), info.last_modified)

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        objects = self._call(prefix, lambda: iter(self.client.list_objects(
            self.bucket, prefix=prefix or None, recursive=True, start_after=start_after or None,
        )))
        while True:  # the SDK pages lazily: each page is a request that can fail
            item = self._call(prefix, lambda: next(objects, None))
            if item is None:
                return
            yield ObjectInfo(item.object_name or "", item.size or 0, None, item.last_modified)

    # compare-and-swap
    @property
    def conditional_writes(self) -> bool:
        with self._probe_lock:
            if self._conditional is None:
                self._conditional = self._probe_conditional_writes()
                log.info("S3 conditional writes", endpoint=self.endpoint, bucket=self.bucket,
                         supported=self._conditional)
            return self._conditional

    def _probe_conditional_writes(self) -> bool:
        key = f"{PROBE_PREFIX}conditional-writes-{uuid.uuid4().hex}"
        try:
            etag = self.put_if_absent(key, b"1", "text/plain")
        except EmotuneError as exc:
            if not exc.details.get("code"):  # unreachable, 5xx: no answer about the feature; never guess
                raise
            # the server answered with an S3 error (Swift: 501 NotImplemented)
            log.info("S3 conditional write refused by the server", endpoint=self.endpoint, error=exc.message)
            return False
        try:
            for attempt in (lambda: self.put_if_absent(key, b"2", "text/plain"),
                            lambda: self.put_if_match(key, b"3", "0" * 32, "text/plain")):
                try:
                    attempt()
                except ConditionFailed:
                    continue
                return False  # the condition was ignored
            self.put_if_match(key, b"4", etag, "text/plain")
            return True
        except EmotuneError as exc:
            if not exc.details.get("code"):
                raise
            return False
        finally:
            try:
                self.delete(key)
            except EmotuneError:
                pass

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        validate_key(key)
        response = self._call(key, lambda: self.client.get_object(self.bucket, key))
        etag = (response.headers.get("ETag") or "").strip('"')
        with io.BufferedReader(_ObjectStream(response, self._where(key)), CHUNK) as stream:  # type: ignore[arg-type]
            return stream.read(), etag

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> str:
        return self._put_conditional(key, data, content_type, {"If-None-Match": "*"})

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str = "application/json") -> str:
        return self._put_conditional(key, data, content_type, {"If-Match": f'"{etag}"'})

    def _put_conditional(self, key: str, data: bytes, content_type: str, condition: dict[str, str]) -> str:
        validate_key(key)
        headers = {"Content-Type": content_type, SHA256_META: hashlib.sha256(data).hexdigest(), **condition}
        try:
            # The SDK's public put_object turns unknown headers into user metadata: its single-request PUT
            # passes them as they are.
            result = self._call(key, lambda: self.client._put_object(self.bucket, key, data, headers=headers))
        except (ConditionFailed, NotFound) as refused:
            try:  # our own earlier attempt may have landed (a retry after a lost response)
                current, etag = self.get_with_etag(key)
            except NotFound:
                current, etag = None, ""
            if current == data and etag:
                return etag
            if isinstance(refused, ConditionFailed):
                raise
            raise ConditionFailed(f"conditional write refused for {self._where(key)}: the object is gone",
                                  key=key, http_status=404) from None
        return result.etag

    # deletes, URLs
    def delete(self, key: str) -> None:
        validate_key(key)
        self._call(key, lambda: self.client.remove_object(self.bucket, key))

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        self.stat(key)  # NotFound now rather than a 404 for whoever gets the URL
        return self._call(key, lambda: self.client.presigned_get_object(self.bucket, key, expires=expires))


@contextmanager
def _hashed(key: str, stream: BinaryIO, length: int) -> Iterator[tuple[BinaryIO, str, int]]:
    """Yield ``(readable, sha256, size)`` for exactly the bytes to upload.

    A seekable stream with a known length is hashed in place and rewound; anything else is copied into a
    temporary file while hashing (in memory up to one part).
    """
    if length >= 0 and _seekable(stream):
        start = stream.tell()
        digest, size = copy_hashed(key, stream, None, length)
        stream.seek(start)
        yield stream, digest, size
        return
    with tempfile.SpooledTemporaryFile(max_size=PART_SIZE) as spool:
        digest, size = copy_hashed(key, stream, spool, length)
        spool.seek(0)
        yield spool, digest, size  # type: ignore[misc]


def _seekable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError):
        return False


__all__ = ["PART_SIZE", "S3Store"]
