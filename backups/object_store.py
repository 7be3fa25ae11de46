"""S3-compatible locations (django-storages' S3Storage): streamed writes published atomically, streamed reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.core.files import File
from django.core.files.storage import Storage


def is_object_store(storage: Storage) -> bool:
    return type(storage).__name__ == "S3Storage" or hasattr(storage, "bucket_name")


def multipart_write(
    storage: Storage,
    key: str,
    reader: Any,
    *,
    expected_bytes: int | None = None,
    lock_mode: str | None = None,
    retain_until: datetime | None = None,
    progress: dict[str, int] | None = None,
) -> int:
    name = storage.save(key, File(reader, name=key))
    return int(storage.size(name))


def object_chunks(storage: Storage, key: str, chunk_size: int) -> Iterator[bytes]:
    with storage.open(key, "rb") as handle:
        while data := handle.read(chunk_size):
            yield data


class ObjectStoreError(Exception):
    """An object store said no or could not be reached; the message names the bucket and key, never a credential."""


def abort_uploads(storage: Storage, predicate: Any) -> int:
    client = storage.connection.meta.client  # type: ignore[attr-defined]
    aborted = 0
    for upload in client.list_multipart_uploads(Bucket=storage.bucket_name).get("Uploads", []):  # type: ignore[attr-defined]
        if predicate(upload["Key"]):
            client.abort_multipart_upload(Bucket=storage.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"])  # type: ignore[attr-defined]
            aborted += 1
    return aborted
