"""backups/object_store.py against a real S3-compatible server (moto's, in a subprocess, tests/support/s3.py), over
real HTTP, with a real fault proxy in front of it for the failures. No database needed."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import time
import tracemalloc
from typing import Any

import pytest

from backups import object_store
from backups.object_store import (
    MIB,
    PARTS_IN_FLIGHT,
    ObjectLocked,
    ObjectStoreError,
    abort_uploads,
    multipart_write,
    object_chunks,
    object_delete,
    object_lock_enabled,
    object_lock_require,
    object_retention,
    object_stat,
    part_size_for,
    uploads_in_progress,
)
from tests.support.s3 import FAKE_KEYS, MotoServer, in_future

PART = 5 * MIB  # S3's minimum, so 40 MiB makes 8 parts


def payload(size: int) -> bytes:
    return os.urandom(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_sha256(storage: Any, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in object_chunks(storage, key):
        digest.update(chunk)
    return digest.hexdigest()


class PipeLikeReader:
    """Returns at most 1 MiB per read, as a pipe does, and can fail or act after some bytes."""

    def __init__(self, data: bytes, *, fail_after: int | None = None, exc: BaseException | None = None) -> None:
        self._data = io.BytesIO(data)
        self.fail_after, self.exc = fail_after, exc
        self.done = 0
        self.on_read: Any = None

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.done >= self.fail_after:
            raise self.exc or RuntimeError("the dump died")
        if self.on_read is not None:
            self.on_read(self.done)
        data = self._data.read(min(size, MIB))
        self.done += len(data)
        return data


# --- Part size -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "part"),
    [
        (None, 64 * MIB),  # no estimate: room for 625 GiB
        (0, 8 * MIB),
        (1, 8 * MIB),
        (10 * 1024 * MIB, 8 * MIB),  # 10 GiB: twice fits in 10,000 parts of the 8 MiB floor
        (40 * 1024 * MIB, 9 * MIB),  # 80 GiB / 10,000 = 8.2 MiB, rounded up to a MiB
        (1024**4, 210 * MIB),  # 1 TiB: 2 TiB / 10,000 = 209.7 MiB
        (50 * 1024**4, 5 * 1024 * MIB),  # 50 TiB: capped at S3's 5 GiB (48.8 TiB in all)
    ],
)
def test_part_size_is_chosen_from_the_estimate_with_headroom(expected: int | None, part: int) -> None:
    assert part_size_for(expected) == part


@pytest.mark.parametrize("expected", [0, 1, 5 * MIB, 3 * 1024**3 + 7, 10**12, 7 * 1024**4, 24 * 1024**4])
def test_part_size_is_whole_mib_within_s3_limits_and_fits_twice_the_estimate(expected: int) -> None:
    part = part_size_for(expected)
    assert part % MIB == 0
    assert object_store.S3_MIN_PART_SIZE <= part <= object_store.MAX_PART_SIZE
    assert part * object_store.MAX_PARTS >= 2 * expected


# --- Writing ---------------------------------------------------------------------------------------------------


def test_multipart_write_streams_40_mib_in_8_parts_at_the_final_key(s3_bucket_factory) -> None:
    bucket = s3_bucket_factory(location="console")
    data = payload(40 * MIB)
    progress: dict[str, int] = {}

    written = multipart_write(
        bucket.storage, "prod/db/a-1.dump", PipeLikeReader(data), part_size=PART, progress=progress
    )

    assert written == len(data) == progress["bytes_done"]
    head = bucket.client.head_object(Bucket=bucket.name, Key="console/prod/db/a-1.dump")  # under the location
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-8")  # a multipart ETag: md5-of-md5s, dash, number of parts
    assert (
        bucket.client.head_object(Bucket=bucket.name, Key="console/prod/db/a-1.dump", PartNumber=1)["PartsCount"] == 8
    )
    assert stored_sha256(bucket.storage, "prod/db/a-1.dump") == sha256(data)
    assert object_stat(bucket.storage, "prod/db/a-1.dump") == (len(data), head["ETag"].strip('"'))
    assert bucket.uploads() == []


def test_an_object_smaller_than_one_part_is_one_put(s3_bucket, s3_proxy) -> None:
    storage = s3_bucket.storage_via(s3_proxy.url)
    data = payload(3 * MIB)

    assert multipart_write(storage, "small.dump", io.BytesIO(data), part_size=PART) == len(data)

    assert [r.split(" ")[0] for r in s3_proxy.requests] == ["PUT"]  # no multipart upload at all
    assert stored_sha256(s3_bucket.storage, "small.dump") == sha256(data)


def test_an_exact_multiple_of_the_part_size_has_no_empty_last_part(s3_bucket) -> None:
    data = payload(2 * PART)
    multipart_write(s3_bucket.storage, "even.dump", io.BytesIO(data), part_size=PART)
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="even.dump")["ETag"].strip('"').endswith("-2")


def test_memory_stays_at_the_parts_in_flight(s3_bucket) -> None:
    """Python's allocations while 40 MiB go up in 5 MiB parts: the peak is the parts being sent and the one being
    read (PARTS_IN_FLIGHT + 1, and boto's view of them), not the object. Measured: 3.2 parts (16.2 MiB)."""
    data = payload(40 * MIB)
    reader = PipeLikeReader(data)
    object_stat(s3_bucket.storage, "warm-up")  # the client and botocore's S3 model (a few MiB, once a process)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        multipart_write(s3_bucket.storage, "memory.dump", reader, part_size=PART)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert peak < (PARTS_IN_FLIGHT + 1.5) * PART, f"peak {peak / MIB:.1f} MiB for {PART / MIB:.0f} MiB parts"


def test_a_500_on_one_part_is_retried_and_the_upload_succeeds(s3_bucket, s3_proxy) -> None:
    s3_proxy.fail_part(2)
    data = payload(4 * PART)

    multipart_write(s3_bucket.storage_via(s3_proxy.url), "retried.dump", PipeLikeReader(data), part_size=PART)

    assert s3_proxy.part_numbers == {1: 1, 2: 2, 3: 1, 4: 1}  # botocore's standard retry sent part 2 again
    assert stored_sha256(s3_bucket.storage, "retried.dump") == sha256(data)
    assert s3_bucket.uploads() == []


def test_a_connection_closed_in_the_middle_of_a_part_is_retried(s3_bucket, s3_proxy) -> None:
    s3_proxy.cut_part(3)
    data = payload(3 * PART + 123)

    multipart_write(s3_bucket.storage_via(s3_proxy.url), "cut.dump", PipeLikeReader(data), part_size=PART)

    assert s3_proxy.part_numbers == {1: 1, 2: 1, 3: 2, 4: 1}  # botocore's standard retry sent part 3 again
    assert stored_sha256(s3_bucket.storage, "cut.dump") == sha256(data)


@pytest.mark.parametrize("exc", [RuntimeError("the dump died"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_reader_failing_mid_stream_aborts_the_upload(s3_bucket, exc: BaseException) -> None:
    reader = PipeLikeReader(payload(40 * MIB), fail_after=12 * MIB, exc=exc)

    with pytest.raises(type(exc)):  # the caller's own exception, as it was: the job framework classifies it
        multipart_write(s3_bucket.storage, "failed.dump", reader, part_size=PART)

    assert object_stat(s3_bucket.storage, "failed.dump") is None
    assert s3_bucket.uploads() == []  # no orphan parts
    assert s3_bucket.versions() == []


def test_the_endpoint_going_away_fails_clearly_and_the_sweep_aborts_the_orphan(s3_bucket, s3_proxy) -> None:
    storage = s3_bucket.storage_via(s3_proxy.url)
    s3_proxy.stop_at_part(3)

    with pytest.raises(ObjectStoreError) as caught:
        multipart_write(storage, "prod/db/gone-42.dump", PipeLikeReader(payload(6 * PART)), part_size=PART)

    message = str(caught.value)
    # Two parts are in flight when the endpoint goes: the error names whichever of them the writer waited on.
    where = f"S3 {s3_proxy.url} bucket '{s3_bucket.name}' key 'prod/db/gone-42.dump': UploadPart "
    assert message.startswith(where) and message[len(where)] in "234", message
    assert "could not connect to the endpoint (tried 4 times)" in message or "closed the connection" in message
    assert "\n" not in message and "Traceback" not in message
    assert FAKE_KEYS["secret_key"] not in message and FAKE_KEYS["access_key"] not in message
    assert not s3_proxy.listening
    # The abort could not reach the endpoint either: the upload is left for the reaper's sweep.
    assert [u["Key"] for u in s3_bucket.uploads()] == ["prod/db/gone-42.dump"]
    assert object_stat(s3_bucket.storage, "prod/db/gone-42.dump") is None

    s3_proxy.start()  # the endpoint is back
    left = uploads_in_progress(storage, prefix="prod/")
    assert [u.key for u in left] == ["prod/db/gone-42.dump"]
    assert left[0].initiated <= dt.datetime.now(dt.UTC)
    aborted = abort_uploads(storage, lambda upload: upload.key.endswith("-42.dump"))
    assert [u.upload_id for u in aborted] == [left[0].upload_id]
    assert s3_bucket.uploads() == []


def test_a_killed_server_fails_the_write_with_an_object_store_error(s3_bucket_factory) -> None:
    server = MotoServer().start()
    try:
        bucket = s3_bucket_factory(server=server)
        reader = PipeLikeReader(payload(4 * PART))
        reader.on_read = lambda done: server.kill() if done >= 2 * PART else None

        with pytest.raises(ObjectStoreError, match="could not connect to the endpoint|closed the connection"):
            multipart_write(bucket.storage, "killed.dump", reader, part_size=PART)
    finally:
        server.kill()


def test_the_sweep_keeps_what_the_predicate_does_not_pick(s3_bucket) -> None:
    client = s3_bucket.client
    for key in ("a/1-x.dump", "a/2-y.dump", "b/3-z.dump"):
        client.create_multipart_upload(Bucket=s3_bucket.name, Key=key)

    assert sorted(u.key for u in uploads_in_progress(s3_bucket.storage, "a/")) == ["a/1-x.dump", "a/2-y.dump"]
    abort_uploads(s3_bucket.storage, lambda upload: "/1-" in upload.key)
    assert sorted(u["Key"] for u in s3_bucket.uploads()) == ["a/2-y.dump", "b/3-z.dump"]


# --- Deleting, Object Lock -------------------------------------------------------------------------------------


def test_delete_removes_every_version_where_storage_delete_leaves_the_data(s3_locked_bucket) -> None:
    bucket = s3_locked_bucket  # Object Lock buckets are versioned
    multipart_write(bucket.storage, "v.dump", io.BytesIO(b"first"), part_size=PART)
    multipart_write(bucket.storage, "v.dump", io.BytesIO(b"second"), part_size=PART)
    multipart_write(bucket.storage, "v.dump.other", io.BytesIO(b"a neighbour"), part_size=PART)

    bucket.storage.delete("v.dump")  # a plain DeleteObject: a delete marker on top, the data stays
    assert sum(v["Key"] == "v.dump" for v in bucket.versions()) == 3
    object_delete(bucket.storage, "v.dump")

    assert [v["Key"] for v in bucket.versions()] == ["v.dump.other"]
    object_delete(bucket.storage, "v.dump")  # nothing left: a no-op


def test_delete_on_an_unversioned_bucket(s3_bucket) -> None:
    multipart_write(s3_bucket.storage, "plain.dump", io.BytesIO(b"x" * 100), part_size=PART)
    object_delete(s3_bucket.storage, "plain.dump")
    assert object_stat(s3_bucket.storage, "plain.dump") is None


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["put", "multipart"])
def test_compliance_retention_refuses_delete_until_it_ends_then_every_version_goes(s3_locked_bucket, size) -> None:
    bucket = s3_locked_bucket
    until = in_future(3)
    multipart_write(
        bucket.storage, "locked.dump", io.BytesIO(payload(size)), part_size=PART, lock_mode="COMPLIANCE",
        retain_until=until,
    )  # fmt: skip

    mode, stored_until = object_retention(bucket.storage, "locked.dump")
    assert mode == "COMPLIANCE" and abs(stored_until - until) < dt.timedelta(seconds=1)
    with pytest.raises(ObjectLocked) as caught:
        object_delete(bucket.storage, "locked.dump")
    assert caught.value.mode == "COMPLIANCE" and caught.value.until == stored_until
    assert str(caught.value) == f"locked.dump is locked until {stored_until:%Y-%m-%d %H:%M} UTC (compliance)"
    with pytest.raises(ObjectLocked):  # no bypass for compliance
        object_delete(bucket.storage, "locked.dump", bypass_governance=True)
    assert len(bucket.versions()) == 1

    time.sleep(max(0.0, (stored_until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    object_delete(bucket.storage, "locked.dump")
    assert bucket.versions() == []


def test_governance_retention_is_not_bypassed_by_default(s3_locked_bucket) -> None:
    bucket = s3_locked_bucket
    until = dt.datetime(2031, 1, 3, tzinfo=dt.UTC)
    multipart_write(
        bucket.storage, "gov.dump", io.BytesIO(payload(PART + 1)), part_size=PART, lock_mode="GOVERNANCE",
        retain_until=until,
    )  # fmt: skip

    with pytest.raises(ObjectLocked, match=r"gov.dump is locked until 2031-01-03 00:00 UTC \(governance\)"):
        object_delete(bucket.storage, "gov.dump")
    assert len(bucket.versions()) == 1
    object_delete(bucket.storage, "gov.dump", bypass_governance=True)
    assert bucket.versions() == []


def test_an_old_locked_version_keeps_the_newer_ones_too(s3_locked_bucket) -> None:
    """Nothing is deleted while any version is locked: retention skips the key and comes back later."""
    bucket = s3_locked_bucket
    until = dt.datetime(2031, 1, 3, tzinfo=dt.UTC)
    multipart_write(bucket.storage, "k.dump", io.BytesIO(b"old"), lock_mode="GOVERNANCE", retain_until=until)
    multipart_write(bucket.storage, "k.dump", io.BytesIO(b"new"))

    with pytest.raises(ObjectLocked):
        object_delete(bucket.storage, "k.dump")
    assert len(bucket.versions()) == 2


def test_object_lock_enabled_reads_the_bucket_configuration(s3_bucket, s3_locked_bucket) -> None:
    assert object_lock_enabled(s3_locked_bucket.storage) is True
    assert object_lock_enabled(s3_bucket.storage) is False
    object_lock_require(s3_locked_bucket.storage, "compliance")
    with pytest.raises(ObjectStoreError, match="object_lock=compliance needs a bucket created with Object Lock"):
        object_lock_require(s3_bucket.storage, "compliance")


def test_a_lock_on_a_bucket_without_object_lock_fails_and_leaves_nothing(s3_bucket) -> None:
    with pytest.raises(ObjectStoreError, match="CreateMultipartUpload failed|PutObjectRetention failed"):
        multipart_write(
            s3_bucket.storage, "nolock.dump", io.BytesIO(payload(PART + 1)), part_size=PART,
            lock_mode="COMPLIANCE", retain_until=in_future(60),
        )  # fmt: skip
    assert s3_bucket.versions() == [] and s3_bucket.uploads() == []


def test_object_retention_is_none_without_a_lock_and_refuses_a_missing_key(s3_locked_bucket) -> None:
    multipart_write(s3_locked_bucket.storage, "free.dump", io.BytesIO(b"x"))
    assert object_retention(s3_locked_bucket.storage, "free.dump") is None
    with pytest.raises(FileNotFoundError):
        object_retention(s3_locked_bucket.storage, "missing.dump")


# --- Reading ---------------------------------------------------------------------------------------------------


def test_storage_open_downloads_the_whole_object_so_reads_use_object_chunks(s3_bucket) -> None:
    """django-storages' S3File fetches the whole object into memory (SpooledTemporaryFile with max_memory_size
    0, which never rolls over) before the first read; object_chunks streams."""
    data = payload(24 * MIB)
    multipart_write(s3_bucket.storage, "read.dump", io.BytesIO(data), part_size=PART)

    def peak(read: Any) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def storage_open() -> None:
        with s3_bucket.storage.open("read.dump", "rb") as handle:
            assert handle.read(MIB) == data[:MIB]

    def chunks() -> None:
        stream = object_chunks(s3_bucket.storage, "read.dump")
        assert next(stream) == data[:MIB]
        stream.close()

    assert peak(storage_open) > len(data)
    assert peak(chunks) < 4 * MIB
    assert b"".join(object_chunks(s3_bucket.storage, "read.dump", 3 * MIB)) == data


def test_reading_a_missing_object(s3_bucket) -> None:
    assert object_stat(s3_bucket.storage, "missing.dump") is None
    with pytest.raises(FileNotFoundError):
        list(object_chunks(s3_bucket.storage, "missing.dump"))


def test_is_object_store(s3_bucket, tmp_path) -> None:
    from django.core.files.storage import FileSystemStorage

    assert object_store.is_object_store(s3_bucket.storage)
    assert not object_store.is_object_store(FileSystemStorage(location=tmp_path))
