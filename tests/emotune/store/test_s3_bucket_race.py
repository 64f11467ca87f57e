"""Services that start together on a new bucket race to create it: the Swift S3 server of the suite answers the
losers' create with BucketAlreadyOwnedByYou (the local stack's datagen died of it in tests/emotune/local). The bucket
is there and ours: opening the store succeeds."""

from __future__ import annotations

import uuid

from emotune.store.s3 import S3Store


def test_a_bucket_created_by_another_process_between_the_check_and_the_create_is_used(s3_settings, monkeypatch):
    settings = s3_settings.model_copy(update={"s3_bucket": f"race-{uuid.uuid4().hex[:10]}"})
    first = S3Store.from_settings(settings)  # the process that won the race made the bucket
    first.put_bytes("hello", b"hi")
    # this process checked before the other created it, so it creates it too
    monkeypatch.setattr("minio.Minio.bucket_exists", lambda *_args, **_kwargs: False)
    second = S3Store.from_settings(settings)
    assert second.get_bytes("hello") == b"hi"
